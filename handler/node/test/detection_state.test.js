'use strict';
// The detector's state between invocations (docs/contract.md 12) in the Node twin against moto: the same cases as
// tests/handler/test_detection_state.py (a retried batch scores as its first attempt and learns nothing twice).
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const index = require('../index.js');
const support = require('./support.js');

const START = 1_767_225_600_000;
const ENV = {
  ENVIRONMENT: 'test',
  THRESHOLDS: { temperature: { min: 10, max: 80, unit: 'celsius', detector: 'onset', probation: 5 } },
};
const SPIKES = new Map([[10, 35.0], [32, 60.0]]);
const record = (n, device = 'press-1') => ({
  sequenceNumber: String(1000 + n), partitionKey: device, arrivedAt: START + 60_000,
  payload: { deviceId: device, sensorType: 'temperature', value: SPIKES.get(n) ?? 20.0 + ((n * 7) % 5) / 10,
    timestamp: START + n * 1000 },
});
const BATCH = Array.from({ length: 40 }, (_, n) => record(n));

let moto;
before(async () => { moto = await support.startMoto(); });
after(async () => { if (moto) await moto.stop(); });
beforeEach(async () => { await support.resetMoto(moto.endpoint); });

/** Process `batches` in turn on a fresh table (the first through `refuse`, a BatchWriteItem filter); the table
 * after them and each batch's response (or error). */
async function run(batches, refuse = null) {
  await support.resetMoto(moto.endpoint);
  const aws = support.clients(moto.endpoint);
  await support.createResources(aws);
  const responses = [];
  for (const [n, batch] of batches.entries()) {
    const clients = support.clients(moto.endpoint);
    if (refuse && n === 0) {
      clients.dynamodb.middlewareStack.add((next, context) => async (args) => {
        if (context.commandName === 'BatchWriteItemCommand'
          && refuse(args.input.RequestItems[support.TABLE].map((r) => r.PutRequest.Item))) {
          throw Object.assign(new Error('refused'), {
            name: 'ValidationException', $fault: 'client', $metadata: { httpStatusCode: 400 } });
        }
        return next(args);
      }, { step: 'initialize', name: 'refuse' });
    }
    const { runtime } = support.makeRuntime(ENV, clients);
    try {
      responses.push(await index.processBatch(support.kinesisEvent(batch), null, runtime));
    } catch (err) {
      responses.push(err);
    }
  }
  return [await support.scanItems(aws.dynamodb), responses];
}

const split = (items) => [items.filter((i) => i.sk !== index.STATE_SORT_KEY),
  items.find((i) => i.sk === index.STATE_SORT_KEY)];

test('the state persists between batches, and retries score as the first attempt', async () => {
  const [reference, referenceState] = split((await run([BATCH]))[0]);
  assert.equal(JSON.parse(referenceState.statesV2).temperature[0], 40);

  const [twoBatches, twoState] = split((await run([BATCH.slice(0, 17), BATCH.slice(17)]))[0]);
  assert.deepEqual(twoBatches, reference);
  assert.equal(twoState.statesV2, referenceState.statesV2);
  assert.equal(twoState.prevSeq, '1016');

  const [partialItems, partialResponses] = await run([BATCH, BATCH.slice(25)],
    (items) => items.some((i) => i.sequenceNumber && i.sequenceNumber.S === '1030'));
  assert.deepEqual(partialResponses[0].batchItemFailures.map((f) => f.itemIdentifier),
    BATCH.slice(25).map((r) => r.sequenceNumber));
  const [partial, partialState] = split(partialItems);
  assert.deepEqual(partial, reference);
  assert.equal(partialState.statesV2, referenceState.statesV2);

  const [once] = await run([BATCH]);
  const [twice] = await run([BATCH, BATCH]);
  assert.deepEqual(twice, once);

  const [halves, halvesState] = split((await run([BATCH, BATCH.slice(0, 20), BATCH.slice(20)]))[0]);
  assert.deepEqual(halves, reference);
  assert.equal(halvesState.statesV2, referenceState.statesV2);

  const [failedItems, failedResponses] = await run([BATCH, BATCH],
    (items) => items.some((i) => i.sk.S === index.STATE_SORT_KEY));
  assert.ok(failedResponses[0] instanceof index.BatchFailed);
  assert.deepEqual(split(failedItems), [reference, referenceState]);

  const [, redelivered] = split((await run([BATCH.slice(0, 20), BATCH.slice(20), BATCH.slice(5, 8)]))[0]);
  assert.deepEqual([redelivered.seq, JSON.parse(redelivered.statesV2).temperature[0]], ['1039', 40]);
});

/** Clients on which a call matching `waiter` waits (2 s at most) for a call matching `awaited` to start, recording
 * whether it did: calls issued together overlap, a call issued after the waiting one ended never does. */
function overlapping(clients, waiter, awaited) {
  let signal;
  const started = new Promise((resolve) => { signal = resolve; });
  const overlapped = [];
  for (const client of [clients.s3, clients.dynamodb]) {
    client.middlewareStack.add((next, context) => async (args) => {
      if (awaited(context.commandName, args.input)) signal(true);
      if (waiter(context.commandName, args.input)) {
        let timer;
        overlapped.push(await Promise.race([started, new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), 2000);
        })]));
        clearTimeout(timer);
      }
      return next(args);
    }, { step: 'initialize', name: 'overlap' });
  }
  return overlapped;
}

const isStateWrite = (name, input) => name === 'BatchWriteItemCommand'
  && input.RequestItems[support.TABLE].some((r) => r.PutRequest.Item.sk.S === index.STATE_SORT_KEY);

for (const [label, waiter, awaited] of [
  // The state items are read while the raw archive is written ...
  ['read with the archive', (name) => name === 'PutObjectCommand', (name) => name === 'BatchGetItemCommand'],
  // ... and written with the readings, not after them.
  ['written with the readings', (name, input) => name === 'BatchWriteItemCommand' && !isStateWrite(name, input),
    isStateWrite],
]) {
  test(`state round trips overlap the batch's own calls: ${label}`, async () => {
    const aws = support.clients(moto.endpoint);
    await support.createResources(aws);
    const clients = support.clients(moto.endpoint);
    const overlapped = overlapping(clients, waiter, awaited);
    const { runtime } = support.makeRuntime(ENV, clients);
    assert.deepEqual(await index.processBatch(support.kinesisEvent(BATCH), null, runtime), { batchItemFailures: [] });
    const [, state] = split(await support.scanItems(aws.dynamodb));
    assert.equal(state.seq, '1039');
    assert.ok(overlapped.length > 0 && overlapped.every(Boolean), `overlapped: ${overlapped}`);
  });
}
