#!/usr/bin/env node
'use strict';
/**
 * Benchmark driver for a Node processor (iotpipe's handler/node/index.js or the seed's handler).
 *
 * stdin: a JSON job {handlerPath, events: [Kinesis events], env: {NAME: value}, latencyMs?: number,
 *   stateItems?: [items], warmup?: boolean}. The handler runs the events one after another against
 *   AWS_ENDPOINT_URL (from `env` or the environment), or, with latencyMs, against a latency model: every AWS call
 *   waits latencyMs and gets a canned success without reaching any server. The model keeps the detector state
 *   items written to it (starting from stateItems) and answers BatchGetItem with them, as DynamoDB does and as
 *   bench_processor.py's LatencyModel does.
 * stdout: one JSON line {"seconds", "readings", "apiCalls", "failures", "handler", "maxRssMb", "summary",
 *   "learned"}: "learned" is, under the latency model, the fewest and the most readings a kept state has learned; the
 *   handler's own stdout (logs, EMF) is discarded but for its last "batch processed" line (summary). budgetMs
 *   (default 60,000) is what the context's getRemainingTimeInMillis counts down from, per invocation. apiCalls counts HTTP attempts (SDK retries included), or calls under the model.
 *
 *   node bench/node_driver.js < job.json
 */
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');

const NODE_MODULES = path.resolve(__dirname, '..', 'handler', 'node', 'node_modules');
const CLIENT_MODULES = ['@aws-sdk/client-s3', '@aws-sdk/client-dynamodb', '@aws-sdk/client-cloudwatch'];
const CANNED = { BatchWriteItemCommand: { UnprocessedItems: {} }, PutObjectCommand: { ETag: '"bench"' } };
const STATE_SORT_KEY = '#detector'; // the sort key of a device's detector state item (docs/contract.md 12)

/** A handler outside handler/node (the seed's, in a temporary directory) still finds the dev SDK. */
function useDevSdk() {
  process.env.NODE_PATH = [NODE_MODULES, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
  Module._initPaths();
}

/** Wraps `send` of every SDK client class; returns the counter. */
function instrumentClients(latencyMs, states) {
  const counter = { calls: 0 };
  const instrumented = new WeakSet();
  for (const name of CLIENT_MODULES) {
    const mod = require(name);
    for (const cls of Object.values(mod)) {
      if (typeof cls !== 'function' || !/Client$/.test(cls.name) || !cls.prototype.send) continue;
      const send = cls.prototype.send;
      cls.prototype.send = function countedSend(command, ...rest) {
        if (latencyMs !== undefined) return modelledCall(counter, command, latencyMs, states);
        if (!instrumented.has(this)) {
          instrumented.add(this);
          // finalizeRequest, low priority: after the retry middleware, so each HTTP attempt counts.
          this.middlewareStack.add((next) => (args) => { counter.calls += 1; return next(args); },
            { step: 'finalizeRequest', priority: 'low', name: 'benchCountCalls' });
        }
        return send.call(this, command, ...rest);
      };
    }
  }
  return counter;
}

/** The model's answer to a call: BatchWriteItem keeps its state items, BatchGetItem answers with them. */
function modelledAnswer(command, states) {
  const name = command.constructor.name;
  const requestItems = command.input.RequestItems || {};
  if (name === 'BatchWriteItemCommand') {
    for (const requests of Object.values(requestItems)) {
      for (const { PutRequest: put } of requests) {
        if (put && put.Item.sk.S === STATE_SORT_KEY) states.set(put.Item.deviceId.S, put.Item);
      }
    }
  }
  if (name === 'BatchGetItemCommand') {
    const responses = {};
    for (const [table, { Keys: keys }] of Object.entries(requestItems)) {
      responses[table] = keys.filter((key) => key.sk.S === STATE_SORT_KEY && states.has(key.deviceId.S))
        .map((key) => states.get(key.deviceId.S));
    }
    return { Responses: responses, UnprocessedKeys: {} };
  }
  return CANNED[name] || {};
}

/** The fewest and the most readings a series of the kept state items has learned (a state's first number). */
function learnedRange(states) {
  const counts = [];
  for (const item of states.values()) {
    for (const values of Object.values(JSON.parse(item.statesV2.S))) counts.push(values[0]);
  }
  return counts.length ? [Math.min(...counts), Math.max(...counts)] : null;
}

async function modelledCall(counter, command, latencyMs, states) {
  counter.calls += 1;
  await new Promise((resolve) => { setTimeout(resolve, latencyMs); });
  return { ...modelledAnswer(command, states), $metadata: { httpStatusCode: 200 } };
}

/** Failed records of one invocation: ours answers batchItemFailures, the seed a body with an error count. */
function failuresOf(result, recordCount) {
  if (result && Array.isArray(result.batchItemFailures)) return result.batchItemFailures.length;
  if (result && typeof result.body === 'string') return Number(JSON.parse(result.body).errors || 0);
  return result === undefined ? 0 : recordCount;
}

async function invoke(handler, event, budgetMs = 60_000) {
  const started = Date.now();
  const context = {
    getRemainingTimeInMillis: () => budgetMs - (Date.now() - started), functionName: 'bench', awsRequestId: 'bench',
  };
  try {
    return failuresOf(await handler(event, context), event.Records.length);
  } catch {
    return event.Records.length;
  }
}

async function main() {
  const job = JSON.parse(fs.readFileSync(0, 'utf8'));
  Object.assign(process.env, job.env || {});
  useDevSdk();
  const states = new Map((job.stateItems || []).map((item) => [item.deviceId.S, item]));
  const counter = instrumentClients(job.latencyMs, states);
  const { handler } = require(path.resolve(job.handlerPath));
  const events = job.events || [];
  const write = process.stdout.write.bind(process.stdout);
  let summary = null; // the handler's last "batch processed" log line, when it writes one
  process.stdout.write = (chunk) => {
    const text = String(chunk);
    if (text.includes('"batch processed"')) summary = JSON.parse(text.trim().split('\n').pop());
    return true;
  };
  let seconds;
  let failures = 0;
  try {
    if (job.warmup && events.length) await invoke(handler, events[0]);
    counter.calls = 0;
    const started = process.hrtime.bigint();
    for (const event of events) failures += await invoke(handler, event, job.budgetMs);
    seconds = Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    process.stdout.write = write;
  }
  const readings = events.reduce((sum, event) => sum + event.Records.length, 0);
  const maxRssMb = process.resourceUsage().maxRSS / 1024;
  write(`${JSON.stringify({
    seconds, readings, apiCalls: counter.calls, failures, handler: job.handlerPath, maxRssMb, summary,
    learned: job.latencyMs === undefined ? null : learnedRange(states),
  })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
