'use strict';
// The Node processor under faults and hostile input (issue 13): the same cases as
// tests/handler/test_handler_faults.py, with SDK middleware injecting transport errors, throttling, hung calls
// and partial failures.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const zlib = require('node:zlib');
const { BatchWriteItemCommand } = require('@aws-sdk/client-dynamodb');
const index = require('../index.js');
const support = require('./support.js');

const RECEIVED = 1718000000000;
const ENV = {
  ENVIRONMENT: 'test',
  UNKNOWN_SENSOR: 'quarantine',
  TTL_DAYS: 90,
  THRESHOLDS: { temperature: { min: 10, max: 80, unit: 'celsius' }, pressure: { min: 30, max: 150, unit: 'psi' } },
};

let moto;
before(async () => { moto = await support.startMoto(); });
after(async () => { if (moto) await moto.stop(); });
beforeEach(async () => { await support.resetMoto(moto.endpoint); });

function reading(seq, { device = 'press-1', sensor = 'temperature', value = 50, offsetMs = 0, ...extra } = {}) {
  const payload = {
    deviceId: device, sensorType: sensor, value, timestamp: RECEIVED - 1000 + offsetMs,
    receivedAt: RECEIVED, topicDeviceId: device, ...extra,
  };
  return { sequenceNumber: String(seq), partitionKey: device, arrivedAt: RECEIVED + 200, payload };
}

function many(count, devices = 10) {
  return Array.from({ length: count }, (_, i) => reading(1000 + i, {
    device: `press-${i % devices}`, value: 20 + (i % 50), offsetMs: i,
  }));
}

async function harness({ create = true, env = ENV, overrides = {} } = {}) {
  const aws = support.clients(moto.endpoint);
  const real = support.clients(moto.endpoint);
  if (create) await support.createResources(aws);
  const { runtime, lines, sleeps } = support.makeRuntime(env, aws, overrides);
  const run = (records, context = null) => index.processBatch(support.kinesisEvent(records), context, runtime);
  const documents = () => lines.map((line) => JSON.parse(line));
  const metrics = () => support.metricTotals(support.emfDocuments(lines));
  return { ...aws, real, runtime, lines, sleeps, run, documents, metrics };
}

/** BatchWriteItem answers with UnprocessedItems for the requests `predicate` picks (the others are written). */
function withhold(h, predicate) {
  h.dynamodb.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName !== 'BatchWriteItemCommand') return next(args);
    const requests = args.input.RequestItems[support.TABLE];
    const withheld = requests.filter((r) => predicate(r.PutRequest.Item));
    const kept = requests.filter((r) => !withheld.includes(r));
    if (kept.length) await h.real.dynamodb.send(new BatchWriteItemCommand({ RequestItems: { [support.TABLE]: kept } }));
    return { output: { UnprocessedItems: withheld.length ? { [support.TABLE]: withheld } : {}, $metadata: {} }, response: {} };
  }, { step: 'initialize', name: 'withhold' });
}

/** A clock only the processor's backoff sleeps advance. */
function fakeClock() {
  const clock = { now: 1000 };
  return { clock, overrides: { monotonic: () => clock.now, sleep: async (s) => { clock.now += s; } } };
}

const contextWith = (remainingMs) => ({ getRemainingTimeInMillis: () => remainingMs });
const lines = async (s3, prefix) => Object.values(await support.objects(s3, prefix)).flatMap(support.jsonlGz);

test('a reading is never replaced by a later batch', async () => {
  const first = await harness();
  await first.run([reading(1001, { value: 70 })]);
  const again = await harness({ create: false });
  assert.deepEqual(await again.run([reading(1002, { value: 75 })]), { batchItemFailures: [] });
  const items = await support.scanItems(again.dynamodb);
  assert.deepEqual(items.map((i) => [i.value, i.sequenceNumber]), [[70, '1001'], [75, '1002']]);
  assert.deepEqual(await support.objects(again.s3, 'quarantine/'), {});
});

test('a retried record reaches the outcome of its first attempt', async () => {
  const batch = [reading(1, { value: 70 }), reading(2, { device: 'press-2' }), reading(3, { value: 75 })];
  const first = await harness();
  withhold(first, (item) => item.deviceId.S === 'press-2');
  const response = await first.run(batch, contextWith(60_000));
  assert.deepEqual(response, { batchItemFailures: [{ itemIdentifier: '2' }, { itemIdentifier: '3' }] });

  const retry = await harness({ create: false });
  assert.deepEqual(await retry.run(batch.slice(1)), { batchItemFailures: [] });
  const items = await support.scanItems(retry.dynamodb);
  assert.deepEqual(items.map((i) => [i.deviceId, i.value]), [['press-1', 70], ['press-1', 75], ['press-2', 50]]);
  assert.deepEqual(await support.objects(retry.s3, 'quarantine/'), {});
  assert.equal(first.metrics()[0].SensorReadingsProcessed + retry.metrics()[0].SensorReadingsProcessed, items.length);
});

test('no item is written with a ttl before arrival plus retention', async () => {
  const h = await harness();
  const stamps = ['2000-01-02T00:00:00Z', 1e12, RECEIVED - 91 * 86_400_000, RECEIVED - 89 * 86_400_000, 946_684_800_000];
  await h.run(stamps.map((timestamp, n) => reading(1001 + n, { device: `cell-${n}`, timestamp })));
  const items = await support.scanItems(h.dynamodb);
  assert.equal(items.length, 5);
  const arrival = Math.floor((RECEIVED + 200) / 1000);
  assert.ok(items.every((item) => item.ttl >= arrival + 90 * 86_400));
  assert.deepEqual(Object.fromEntries(items.map((i) => [i.deviceId, i.deviceTimestamp || null])), {
    'cell-0': '2000-01-02T00:00:00Z', 'cell-1': '1000000000000', 'cell-2': '1710137600000', 'cell-3': null,
    'cell-4': '946684800000',
  });
});

test('a partial retry counts each stored reading once and lines carry sequence numbers', async () => {
  const records = many(20);
  const first = await harness();
  withhold(first, (item) => item.sequenceNumber.S === '1010');
  const response = await first.run(records, contextWith(60_000));
  assert.equal(response.batchItemFailures[0].itemIdentifier, '1010');
  const retry = await harness({ create: false });
  assert.deepEqual(await retry.run(records.filter((r) => Number(r.sequenceNumber) >= 1010)), { batchItemFailures: [] });
  assert.equal((await support.scanItems(retry.dynamodb)).length, 20);
  assert.equal(first.metrics()[0].SensorReadingsProcessed + retry.metrics()[0].SensorReadingsProcessed, 20);
  const archived = await lines(retry.s3, 'raw/');
  assert.equal(archived.length, 30);
  assert.deepEqual([...new Set(archived.map((l) => l.sequenceNumber))].sort(), records.map((r) => r.sequenceNumber).sort());
});

test('dropped connections and timeouts are retried', async () => {
  const h = await harness();
  const failures = ['ECONNRESET', 'TimeoutError', 'ECONNRESET'];
  h.dynamodb.middlewareStack.add((next) => async (args) => {
    const name = failures.shift();
    if (name) throw Object.assign(new Error(`socket ${name}`), { name, code: name });
    return next(args);
  }, { step: 'finalizeRequest', name: 'drop' });
  let archiveDrops = 1;
  h.s3.middlewareStack.add((next) => async (args) => {
    if (archiveDrops-- > 0) throw Object.assign(new Error('connect ECONNREFUSED'), { name: 'ECONNREFUSED' });
    return next(args);
  }, { step: 'finalizeRequest', name: 'dropArchive' });

  assert.deepEqual(await h.run(many(60)), { batchItemFailures: [] });
  assert.equal((await support.scanItems(h.dynamodb)).length, 60);
  const errors = h.documents().filter((d) => d.message === 'BatchWriteItem failed').map((d) => d.error).sort();
  assert.deepEqual(errors, ['ECONNRESET', 'ECONNRESET', 'TimeoutError']);
  assert.ok(Object.keys(await support.objects(h.s3, 'raw/')).length);
});

function throttle(h) {
  h.dynamodb.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName !== 'BatchWriteItemCommand') return next(args);
    throw Object.assign(new Error('Rate exceeded'), {
      name: 'ThrottlingException', $fault: 'client', $metadata: { httpStatusCode: 400 },
    });
  }, { step: 'initialize', name: 'throttle' });
}

test('throttling with little time left stops before the deadline', async () => {
  const { clock, overrides } = fakeClock();
  const h = await harness({ overrides });
  throttle(h);
  const started = clock.now;
  await assert.rejects(h.run(many(100), contextWith(3_000)), /no record/);
  assert.ok(clock.now > started && clock.now - started <= 3.0 - 0.2, `${clock.now - started}`);
});

test('throttling with a long budget keeps retrying and answers in time', async () => {
  const { clock, overrides } = fakeClock();
  const h = await harness({ overrides });
  withhold(h, (item) => item.deviceId.S === 'press-7');
  const started = clock.now;
  const response = await h.run(many(60), contextWith(60_000));
  assert.equal(response.batchItemFailures[0].itemIdentifier, '1007');
  assert.equal((await support.scanItems(h.dynamodb)).length, 54);
  const elapsed = clock.now - started;
  assert.ok(elapsed >= 40 && elapsed <= 58, `${elapsed}`);
});

test('a hung call does not hold the answer past the deadline', async () => {
  const h = await harness();
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  let entered = false;
  h.dynamodb.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'BatchWriteItemCommand'
      && JSON.stringify(args.input).includes('press-hang')) {
      entered = true;
      await Promise.race([released, new Promise((resolve) => { setTimeout(resolve, 30_000).unref(); })]);
    }
    return next(args);
  }, { step: 'initialize', name: 'hang' });
  let stillHanging;
  let response;
  try {
    response = await h.run([...many(50), reading(2000, { device: 'press-hang' })], contextWith(6_000));
    stillHanging = entered;
  } finally {
    release();
  }
  assert.ok(stillHanging);
  assert.deepEqual(response, { batchItemFailures: [{ itemIdentifier: '2000' }] });
  const [environment] = h.metrics();
  assert.deepEqual([environment.SensorReadingsProcessed, environment.RecordsFailed], [50, 1]);
});

test('malformed event records are quarantined, not a crash', async () => {
  const h = await harness();
  const event = support.kinesisEvent([reading(1001)]);
  event.Records = [null, 'text', { kinesis: { sequenceNumber: '1000', data: '=', approximateArrivalTimestamp: true } },
    ...event.Records];
  assert.deepEqual(await index.processBatch(event, null, h.runtime), { batchItemFailures: [] });
  assert.deepEqual((await support.scanItems(h.dynamodb)).map((i) => i.sequenceNumber), ['1001']);
  const quarantined = (await lines(h.s3, 'quarantine/')).map((l) => [l.sequenceNumber, l.reason]).sort();
  assert.deepEqual(quarantined, [['', 'data is not JSON'], ['', 'data is not JSON'], ['1000', 'data is not base64']]);
});

test('a lone surrogate partition key is archived as its escape', async () => {
  const h = await harness();
  const event = support.kinesisEvent([reading(1001)]);
  event.Records[0].kinesis.partitionKey = 'press-\ud800';
  assert.deepEqual(await index.processBatch(event, null, h.runtime), { batchItemFailures: [] });
  const [body] = Object.values(await support.objects(h.s3, 'raw/'));
  assert.ok(zlib.gunzipSync(body).toString('latin1').includes('"partitionKey":"press-\\ud800"'));
});

function multi(seq, readings, device = 'press-1') {
  const payload = { deviceId: device, timestamp: RECEIVED - 1000, receivedAt: RECEIVED, topicDeviceId: device, readings };
  return { sequenceNumber: String(seq), partitionKey: device, arrivedAt: RECEIVED + 200, payload };
}

test('quarantine holds each payload once', async () => {
  const h = await harness();
  const bad = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`unknown${String(i).padStart(3, '0')}`, i]));
  const huge = Object.fromEntries(Array.from({ length: 9_000 }, (_, i) => [`u${String(i).padStart(4, '0')}`, i]));
  const records = [multi(1001, bad), multi(1002, huge, 'press-2'), reading(1003)];
  const payloadBytes = records.slice(0, 2).reduce((n, r) => n + JSON.stringify(r.payload).length, 0);
  assert.deepEqual(await h.run(records), { batchItemFailures: [] });
  const [body] = Object.values(await support.objects(h.s3, 'quarantine/'));
  const text = zlib.gunzipSync(body);
  const quarantined = support.jsonlGz(body);
  assert.deepEqual(quarantined.map((l) => [l.sequenceNumber, l.reason, (l.rejected || []).length]),
    [['1001', 'unknown sensorType', 100], ['1002', 'too many readings', 0]]);
  assert.ok(text.length < 1.5 * payloadBytes + 100 * 80);
  assert.deepEqual((await support.scanItems(h.dynamodb)).map((i) => i.sequenceNumber), ['1003']);
});

test('calls still queued at the deadline are failures, not a crash', async () => {
  const h = await harness();
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  h.dynamodb.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'BatchWriteItemCommand') {
      await Promise.race([released, new Promise((resolve) => { setTimeout(resolve, 30_000).unref(); })]);
    }
    return next(args);
  }, { step: 'initialize', name: 'hangAll' });
  try { // 40 calls for 16 workers: 24 never start before the deadline
    await assert.rejects(h.run(many(1000, 50), contextWith(1_500)), /no record/);
  } finally {
    release();
  }
  const [environment] = h.metrics();
  assert.deepEqual([environment.SensorReadingsProcessed, environment.RecordsFailed], [0, 1000]);
});

test('the SDK makes one attempt per call and the processor retries', async () => {
  const runtime = index.runtimeFromEnv({ DYNAMODB_TABLE: 't', S3_BUCKET: 'b' });
  for (const client of [runtime.s3, runtime.dynamodb]) assert.equal(await client.config.maxAttempts(), 1);
});

function mixedBatch() {
  const records = many(90);
  records[10] = reading(1010, { value: 'n/a' });
  records[20] = reading(1020, { device: 'press-0', value: 77 }); // same ms as 1000, another value
  records[30] = multi(1030, { temperature: 50, pressure: 'high', mystery: 1 });
  records[40] = { sequenceNumber: '1040', partitionKey: 'p', arrivedAt: RECEIVED, base64: 'AAAA=' };
  return records;
}

async function state(h) {
  const rows = new Set();
  for (const line of await lines(h.s3, 'quarantine/')) {
    for (const r of line.rejected || [line]) rows.add(JSON.stringify([line.sequenceNumber, r.reason, r.sensorType || '']));
  }
  return [await support.scanItems(h.dynamodb), [...rows].sort()];
}

test('under faults and retries every record ends as in a clean run', async () => {
  const records = mixedBatch();
  const clean = await harness();
  assert.deepEqual(await clean.run(records), { batchItemFailures: [] });
  const expected = await state(clean);
  const [cleanTotals] = clean.metrics();
  await support.resetMoto(moto.endpoint);
  await harness(); // the table and bucket again

  let remaining = records;
  let counted = 0;
  let quarantinedCounted = 0;
  let attempt = 0;
  let h;
  for (; attempt < 6; attempt += 1) {
    const { overrides } = fakeClock();
    h = await harness({ create: false, overrides });
    if (attempt < 4) { // each attempt its own faults: a withheld device, dropped connections, a lost quarantine
      withhold(h, (item) => item.deviceId.S === `press-${(3 * attempt + 1) % 10}`);
      let drops = 3;
      h.dynamodb.middlewareStack.add((next) => async (args) => {
        if (drops-- > 0) throw Object.assign(new Error('socket hang up'), { name: 'ECONNRESET' });
        return next(args);
      }, { step: 'finalizeRequest', name: 'drop' });
      if (attempt === 1) {
        h.s3.middlewareStack.add((next) => async (args) => {
          if (args.input.Key.startsWith('quarantine/')) args.input.Bucket = 'no-such-bucket';
          return next(args);
        }, { step: 'initialize', name: 'loseQuarantine' });
      }
    }
    const response = await h.run(remaining, contextWith(60_000));
    const [totals] = h.metrics();
    counted += totals.SensorReadingsProcessed;
    quarantinedCounted += totals.RecordsQuarantined;
    if (response.batchItemFailures.length === 0) break;
    const lowest = Number(response.batchItemFailures[0].itemIdentifier);
    remaining = remaining.filter((r) => Number(r.sequenceNumber) >= lowest);
  }
  assert.equal(attempt, 4); // every faulty attempt left something to retry
  assert.deepEqual(await state(h), expected);
  assert.deepEqual([counted, quarantinedCounted], [cleanTotals.SensorReadingsProcessed, cleanTotals.RecordsQuarantined]);
});

/** Every reading the table holds, packed items unpacked and repeats dropped (as `iotpipe readings` reads). */
function storedReadings(items) {
  const out = new Set();
  for (const item of items) {
    const entries = item.windowStart === undefined
      ? [[item.timestamp, item.value]]
      : item.readings.split(',').map((e) => e.split(':')).map(([o, v]) => [item.windowStart + Number(o), Number(v)]);
    for (const [t, v] of entries) out.add(JSON.stringify([item.deviceId, item.sensorType, t, v, item.status]));
  }
  return [...out].sort();
}

test('the packed layout under withheld writes and retries stores every reading of a clean run', async () => {
  const env = { ...ENV, STORAGE_LAYOUT: 'packed', PACK_WINDOW_SECONDS: '60' };
  const records = mixedBatch();
  const clean = await harness({ env });
  assert.deepEqual(await clean.run(records), { batchItemFailures: [] });
  const cleanItems = await support.scanItems(clean.dynamodb);
  assert.ok(cleanItems.some((item) => item.sk.includes('#packed#')));
  const [cleanTotals] = clean.metrics();
  await support.resetMoto(moto.endpoint);
  await harness(); // the table and bucket again

  let remaining = records;
  let counted = 0;
  const lowest = [];
  let h;
  for (let attempt = 0; attempt < 6; attempt += 1) {
    const { overrides } = fakeClock();
    h = await harness({ create: false, env, overrides });
    // a device's packed items are not written: the batch is cut at their first record
    if (attempt < 3) withhold(h, (item) => item.deviceId.S === `press-${(3 * attempt + 1) % 10}`);
    const response = await h.run(remaining, contextWith(60_000));
    counted += h.metrics()[0].SensorReadingsProcessed;
    if (response.batchItemFailures.length === 0) break;
    lowest.push(response.batchItemFailures[0].itemIdentifier);
    remaining = remaining.filter((r) => Number(r.sequenceNumber) >= Number(lowest[lowest.length - 1]));
  }
  assert.deepEqual(lowest, ['1001', '1004', '1007']);
  assert.deepEqual(storedReadings(await support.scanItems(h.dynamodb)), storedReadings(cleanItems));
  assert.equal(counted, cleanTotals.SensorReadingsProcessed);
});
