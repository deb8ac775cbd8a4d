'use strict';
// The Node.js Lambda runtime of `iotpipe local`: `node worker.js CODE_DIR HANDLER IN_FD OUT_FD`, with the
// function's environment. Invocations arrive on IN_FD and answers leave on OUT_FD (4-byte big-endian
// length, then JSON), so stdout and stderr stay free for the handler's log lines, as on Lambda.
const fs = require('node:fs');
const path = require('node:path');

const [codeDir, handlerName, inFd, outFd] = process.argv.slice(2);
const dot = handlerName.lastIndexOf('.');
const moduleName = handlerName.slice(0, dot);
const functionName = handlerName.slice(dot + 1);

function errorOf(err, type) {
  return { errorType: type || (err && err.name) || 'Error', errorMessage: String(err && err.message ? err.message : err),
    stackTrace: String((err && err.stack) || '').split('\n').slice(0, 5) };
}

let handler = null;
let initError = null;
try {
  handler = require(path.join(codeDir, moduleName))[functionName];
  if (typeof handler !== 'function') throw new Error(`${handlerName} is not a function`);
} catch (err) {
  initError = errorOf(err, 'Runtime.ImportModuleError');
}

const output = fs.createWriteStream(null, { fd: Number(outFd) });
function send(message) {
  const data = Buffer.from(JSON.stringify(message === undefined ? null : message), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(data.length, 0);
  output.write(Buffer.concat([header, data]));
}

async function invoke(request) {
  const started = process.hrtime.bigint();
  process.stdout.write(`START RequestId: ${request.requestId} Version: $LATEST\n`);
  let response;
  if (initError) {
    response = { error: initError };
  } else {
    const context = {
      awsRequestId: request.requestId,
      functionName: process.env.AWS_LAMBDA_FUNCTION_NAME || '',
      functionVersion: '$LATEST',
      invokedFunctionArn: request.functionArn || '',
      memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '128',
      getRemainingTimeInMillis: () => Math.max(0, request.deadlineMs - Date.now()),
    };
    try {
      response = { payload: await handler(request.event, context) };
    } catch (err) {
      response = { error: errorOf(err) };
    }
  }
  if (response.error) process.stderr.write(`[ERROR] ${JSON.stringify(response.error)}\n`);
  const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
  process.stdout.write(`END RequestId: ${request.requestId}\n`);
  process.stdout.write(`REPORT RequestId: ${request.requestId}\tDuration: ${durationMs.toFixed(2)} ms\n`);
  send(response);
}

let buffer = Buffer.alloc(0);
let queue = Promise.resolve();
const input = fs.createReadStream(null, { fd: Number(inFd) });
input.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const length = buffer.readUInt32BE(0);
    if (buffer.length < 4 + length) break;
    const request = JSON.parse(buffer.subarray(4, 4 + length).toString('utf8'));
    buffer = buffer.subarray(4 + length);
    queue = queue.then(() => invoke(request));
  }
});
input.on('end', () => { queue.then(() => output.end()); });
