#!/usr/bin/env node
'use strict';
/**
 * Benchmark driver for a Node processor (iotpipe's handler/node/index.js or the seed's handler).
 *
 * stdin: a JSON job {handlerPath, events: [Kinesis events], env: {NAME: value}, latencyMs?: number,
 *   warmup?: boolean}. The handler runs the events one after another against AWS_ENDPOINT_URL (from `env` or
 *   the environment), or, with latencyMs, against a latency model: every AWS call waits latencyMs and gets a
 *   canned success without reaching any server.
 * stdout: one JSON line {"seconds", "readings", "apiCalls", "failures", "handler", "maxRssMb", "summary"}; the
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

/** A handler outside handler/node (the seed's, in a temporary directory) still finds the dev SDK. */
function useDevSdk() {
  process.env.NODE_PATH = [NODE_MODULES, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
  Module._initPaths();
}

/** Wraps `send` of every SDK client class; returns the counter. */
function instrumentClients(latencyMs) {
  const counter = { calls: 0 };
  const instrumented = new WeakSet();
  for (const name of CLIENT_MODULES) {
    const mod = require(name);
    for (const cls of Object.values(mod)) {
      if (typeof cls !== 'function' || !/Client$/.test(cls.name) || !cls.prototype.send) continue;
      const send = cls.prototype.send;
      cls.prototype.send = function countedSend(command, ...rest) {
        if (latencyMs !== undefined) return modelledCall(counter, command, latencyMs);
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

async function modelledCall(counter, command, latencyMs) {
  counter.calls += 1;
  await new Promise((resolve) => { setTimeout(resolve, latencyMs); });
  return { ...(CANNED[command.constructor.name] || {}), $metadata: { httpStatusCode: 200 } };
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
  const counter = instrumentClients(job.latencyMs);
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
  })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
