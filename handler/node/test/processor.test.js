'use strict';
// The Node processor against a moto server: archive, quarantine, retries, partial-batch response,
// idempotency, EMF metrics and logs; the same cases as tests/handler/test_processor.py.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { BatchWriteItemCommand, QueryCommand } = require('@aws-sdk/client-dynamodb');
const { CreateBucketCommand } = require('@aws-sdk/client-s3');
const index = require('../index.js');
const support = require('./support.js');

const RECEIVED = 1718000000000; // 2024-06-10T06:13:20Z
const ENV = {
  ENVIRONMENT: 'test',
  UNKNOWN_SENSOR: 'quarantine',
  TTL_DAYS: 90,
  THRESHOLDS: { temperature: { min: 10, max: 80, unit: 'celsius' }, pressure: { min: 30, max: 150, unit: 'psi' } },
};
const RAW_PREFIX = 'raw/year=2024/month=06/day=10/hour=06/shardId-000000000000/';
const EMF_UNITS = new Set(['Seconds', 'Microseconds', 'Milliseconds', 'Bytes', 'Kilobytes', 'Megabytes', 'Gigabytes',
  'Terabytes', 'Bits', 'Kilobits', 'Megabits', 'Gigabits', 'Terabits', 'Percent', 'Count', 'Bytes/Second',
  'Kilobytes/Second', 'Megabytes/Second', 'Gigabytes/Second', 'Terabytes/Second', 'Bits/Second', 'Kilobits/Second',
  'Megabits/Second', 'Gigabits/Second', 'Terabits/Second', 'Count/Second', 'None']);

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

/** Clients on the moto server, a runtime with captured stdout and recorded backoff, counted HTTP calls. */
async function harness({ create = true, env = ENV } = {}) {
  const aws = support.clients(moto.endpoint);
  const real = support.clients(moto.endpoint);
  if (create) await support.createResources(aws);
  const calls = [];
  for (const [service, client] of Object.entries(aws)) {
    client.middlewareStack.add((next, context) => async (args) => {
      calls.push(`${service}.${context.commandName}`);
      return next(args);
    }, { step: 'finalizeRequest', priority: 'low', name: 'countCalls' });
  }
  const { runtime, lines, sleeps } = support.makeRuntime(env, aws);
  const run = (records, context = null) => index.processBatch(support.kinesisEvent(records), context, runtime);
  const documents = () => lines.map((line) => JSON.parse(line));
  return { ...aws, real, runtime, lines, sleeps, calls, run, documents };
}

/** BatchWriteItem answers with UnprocessedItems for the requests `predicate` picks (those are not written,
 *  the others really are), for the first `times` calls or forever. */
function withhold(h, predicate, times = null) {
  const state = { calls: 0 };
  h.dynamodb.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName !== 'BatchWriteItemCommand') return next(args);
    state.calls += 1;
    if (times !== null && state.calls > times) return next(args);
    const requests = args.input.RequestItems[support.TABLE];
    const withheld = requests.filter((r, i) => predicate(i, r.PutRequest.Item));
    const kept = requests.filter((r) => !withheld.includes(r));
    if (kept.length) await h.real.dynamodb.send(new BatchWriteItemCommand({ RequestItems: { [support.TABLE]: kept } }));
    const output = { UnprocessedItems: withheld.length ? { [support.TABLE]: withheld } : {}, $metadata: {} };
    return { output, response: {} };
  }, { step: 'initialize', name: 'withhold' });
  return state;
}

const contextWith = (remainingMs) => ({ getRemainingTimeInMillis: () => remainingMs });

test('every raw record is archived in one object per batch', async () => {
  const h = await harness();
  await h.run([
    reading(1001),
    { sequenceNumber: '1002', partitionKey: 'press-1', arrivedAt: RECEIVED + 250, text: '{"deviceId":"press-1","val' },
    { sequenceNumber: '1003', partitionKey: 'press-1', arrivedAt: RECEIVED + 300,
      base64: Buffer.from([0xff, 0x00, ...Buffer.from('binary')]).toString('base64') },
  ]);

  const archive = await support.objects(h.s3, 'raw/');
  assert.deepEqual(Object.keys(archive), [`${RAW_PREFIX}1001-1003.jsonl.gz`]);
  const lines = support.jsonlGz(archive[`${RAW_PREFIX}1001-1003.jsonl.gz`]);
  assert.deepEqual(lines.map((l) => [l.sequenceNumber, l.partitionKey, l.arrivedAt]),
    [['1001', 'press-1', RECEIVED + 200], ['1002', 'press-1', RECEIVED + 250], ['1003', 'press-1', RECEIVED + 300]]);
  assert.equal(JSON.parse(lines[0].data).value, 50);
  assert.equal(lines[1].data, '{"deviceId":"press-1","val');
  assert.deepEqual(Buffer.from(lines[2].dataBase64, 'base64'), Buffer.from([0xff, 0x00, ...Buffer.from('binary')]));
  assert.ok(!('data' in lines[2]));
});

test('quarantined records go to one object and one log line each', async () => {
  const h = await harness();
  const response = await h.run([
    reading(1001), reading(1002, { value: 'hot' }),
    { sequenceNumber: '1003', partitionKey: 'press-1', arrivedAt: RECEIVED, base64: Buffer.from([0xfe, 0xff]).toString('base64') },
    { sequenceNumber: '1004', partitionKey: 'press-1', arrivedAt: RECEIVED, base64: '%%%' },
  ]);
  assert.deepEqual(response, { batchItemFailures: [] });

  const key = 'quarantine/year=2024/month=06/day=10/hour=06/shardId-000000000000/1001-1004.jsonl.gz';
  const quarantine = await support.objects(h.s3, 'quarantine/');
  assert.deepEqual(Object.keys(quarantine), [key]);
  const lines = support.jsonlGz(quarantine[key]);
  assert.deepEqual(lines.map((l) => [l.sequenceNumber, l.reason]), [
    ['1002', 'value is not a number'], ['1003', 'data is not UTF-8'], ['1004', 'data is not base64']]);
  assert.equal(JSON.parse(lines[0].data).value, 'hot');
  assert.equal(lines[1].dataBase64, Buffer.from([0xfe, 0xff]).toString('base64'));
  const warnings = h.documents().filter((d) => d.message === 'record quarantined');
  assert.deepEqual(warnings.map((w) => [w.sequenceNumber, w.reason, w.level]), [
    ['1002', 'value is not a number', 'WARN'], ['1003', 'data is not UTF-8', 'WARN'],
    ['1004', 'data is not base64', 'WARN']]);
  assert.deepEqual((await support.scanItems(h.dynamodb)).map((i) => i.sequenceNumber), ['1001']);
});

test('UnprocessedItems several times are retried until written', async () => {
  const h = await harness();
  const state = withhold(h, (i) => i % 2 === 1, 6);

  assert.deepEqual(await h.run(many(100)), { batchItemFailures: [] });

  assert.equal((await support.scanItems(h.dynamodb)).length, 100);
  assert.ok(state.calls > 4, `${state.calls} calls`);
  assert.ok(h.sleeps.length > 0 && h.sleeps.every((s) => s >= 0 && s <= index.BACKOFF_CAP_S));
  const [environment] = support.metricTotals(support.emfDocuments(h.lines));
  assert.equal(environment.SensorReadingsProcessed, 100);
  assert.equal(environment.RecordsFailed, 0);
});

test('items never written are reported lowest sequence number first', async () => {
  const h = await harness();
  withhold(h, (_i, item) => item.deviceId.S === 'press-7');

  const response = await h.run(many(60), contextWith(60_000));

  // Lambda retries from the lowest failure on, so every later record is reported too
  assert.deepEqual(response.batchItemFailures.map((f) => f.itemIdentifier),
    Array.from({ length: 53 }, (_, i) => String(1007 + i)));
  const stored = await support.scanItems(h.dynamodb);
  assert.equal(stored.length, 54);
  assert.ok(!stored.some((item) => item.deviceId === 'press-7'));
  // each of the 3 chunks holds press-7 items: at most MAX_WRITE_ATTEMPTS calls, one backoff between two
  assert.equal(h.sleeps.length, 3 * (index.MAX_WRITE_ATTEMPTS - 1));
  const [environment] = support.metricTotals(support.emfDocuments(h.lines));
  // only the records before the first failure are counted: the others are counted by the retry
  assert.deepEqual([environment.SensorReadingsProcessed, environment.RecordsFailed], [7, 53]);
});

test('retries stop at the time budget', async () => {
  const h = await harness();
  withhold(h, () => true);
  await assert.rejects(h.run(many(5), contextWith(0)), index.BatchFailed);
  assert.deepEqual(h.sleeps, []);
});

test('a failing archive fails the batch before anything is stored', async () => {
  const h = await harness({ create: false });
  await support.createTable(h.dynamodb, { withIndex: false });

  await assert.rejects(h.run(many(30)), (err) => err instanceof index.BatchFailed && /raw archive/.test(err.message));

  assert.deepEqual(await support.scanItems(h.dynamodb), []);
  const errors = h.documents().filter((d) => d.level === 'ERROR');
  assert.ok(errors.length > 0);
  assert.equal(errors[0].error, 'NoSuchBucket');
  assert.match(errors[0].detail, /NoSuchBucket/);
});

test('nothing writable throws so the batch is retried', async () => {
  const h = await harness({ create: false });
  await h.s3.send(new CreateBucketCommand({ Bucket: support.BUCKET }));

  await assert.rejects(h.run(many(3)), (err) => err instanceof index.BatchFailed && /no record/.test(err.message));
  assert.ok(Object.keys(await support.objects(h.s3, 'raw/')).length > 0);
});

test('a failing quarantine write reports the quarantined records', async () => {
  const h = await harness();
  h.s3.middlewareStack.add((next) => async (args) => {
    if (args.input.Key && args.input.Key.startsWith('quarantine/')) args.input.Bucket = 'no-such-bucket';
    return next(args);
  }, { step: 'initialize', name: 'elsewhere' });

  const response = await h.run([reading(1001), reading(1002, { value: null }), reading(1003, { sensor: 'pressure' })]);

  assert.deepEqual(response, { batchItemFailures: [{ itemIdentifier: '1002' }, { itemIdentifier: '1003' }] });
  assert.equal((await support.scanItems(h.dynamodb)).length, 2);
});

test('a retried batch leaves the same objects and items', async () => {
  const records = [...many(40), reading(2000, { value: 'n/a' }), reading(2001, { value: 95 })];
  const first = await harness();
  await first.run(records);
  const decoded = async (h) => Object.fromEntries(Object.entries(await support.objects(h.s3, ''))
    .map(([k, body]) => [k, support.jsonlGz(body)]));
  const state = [await decoded(first), await support.scanItems(first.dynamodb)];

  const again = await harness({ create: false });
  await again.run(records);

  assert.deepEqual([await decoded(again), await support.scanItems(again.dynamodb)], state);
  assert.equal(Object.keys(state[0]).length, 2);
  assert.equal(state[1].length, 41);
});

test('anomalies are in the sparse index only', async () => {
  const h = await harness();
  await h.run([reading(1001, { value: 95 }), reading(1002, { value: 50, offsetMs: 1 }),
    reading(1003, { sensor: 'pressure', value: 10 })]);

  const page = await h.dynamodb.send(new QueryCommand({
    TableName: support.TABLE, IndexName: 'AnomaliesByDay', KeyConditionExpression: 'anomalyDay = :d',
    ExpressionAttributeValues: { ':d': { S: '2024-06-10' } },
  }));
  assert.deepEqual(page.Items.map((i) => [i.sensorType.S, i.reason.S]).sort(),
    [['pressure', 'below min 30'], ['temperature', 'above max 80']]);
  const normal = (await support.scanItems(h.dynamodb)).filter((i) => i.status === 'NORMAL');
  assert.equal(normal.length, 1);
  assert.ok(!['anomalyDay', 'anomalySk', 'reason'].some((k) => k in normal[0]));
});

test('a thousand readings take at most fifty API calls', async () => {
  const h = await harness();
  assert.deepEqual(await h.run(many(1000, 50)), { batchItemFailures: [] });

  assert.equal((await support.scanItems(h.dynamodb)).length, 1000);
  const during = h.calls.filter((c) => c !== 'dynamodb.ScanCommand');
  assert.ok(during.length <= 50, `${during.length} calls`);
  assert.equal(during.filter((c) => c === 'dynamodb.BatchWriteItemCommand').length, 40);
  assert.equal(during.filter((c) => c.startsWith('s3.')).length, 1);
});

test('EMF lines follow the embedded metric format', async () => {
  const h = await harness();
  await h.run([reading(1001, { value: 95 }), reading(1002, { sensor: 'pressure' }), reading(1003, { value: 'x' })]);

  const documents = support.emfDocuments(h.lines);
  assert.ok(documents.length > 0, 'no EMF line');
  for (const doc of documents) {
    assert.ok(Number.isInteger(doc._aws.Timestamp) && doc._aws.Timestamp > 1_600_000_000_000);
    for (const directive of doc._aws.CloudWatchMetrics) {
      assert.equal(directive.Namespace, 'IoT/Manufacturing');
      assert.ok(directive.Dimensions.length && directive.Dimensions.every((s) => s.length > 0 && s.length <= 30));
      for (const dimension of directive.Dimensions.flat()) assert.ok(typeof doc[dimension] === 'string' && doc[dimension]);
      assert.ok(directive.Metrics.length > 0 && directive.Metrics.length <= 100);
      for (const metric of directive.Metrics) {
        assert.match(metric.Name, /^[A-Za-z]{1,1024}$/);
        assert.ok(EMF_UNITS.has(metric.Unit), metric.Unit);
        assert.equal(typeof doc[metric.Name], 'number');
      }
    }
  }
  const dimensionSets = new Set(documents.flatMap((d) => d._aws.CloudWatchMetrics.flatMap((c) => c.Dimensions.map((s) => s.join(',')))));
  assert.deepEqual([...dimensionSets].sort(), ['Environment', 'Environment,SensorType']);
  assert.ok(documents.every((d) => d.Environment === 'test'));
  const [environment, byType] = support.metricTotals(documents);
  assert.deepEqual([environment.SensorReadingsProcessed, environment.AnomaliesDetected, environment.RecordsQuarantined], [2, 1, 1]);
  assert.ok(environment.IngestLag >= 0 && environment.BatchDuration >= 0);
  assert.deepEqual(byType, {
    temperature: { SensorReadingsProcessed: 1, AnomaliesDetected: 1 },
    pressure: { SensorReadingsProcessed: 1, AnomaliesDetected: 0 },
  });
});

test('logs are JSON lines and never the event', async () => {
  const h = await harness();
  await h.run([reading(1001, { note: 'SECRET-PAYLOAD-MARKER' }), reading(1002, { value: [1], note: 'SECRET-PAYLOAD-MARKER' })]);

  const documents = h.documents();
  assert.ok(documents.every((d) => d !== null && typeof d === 'object' && !Array.isArray(d)));
  assert.ok(!h.lines.some((line) => line.includes('SECRET-PAYLOAD-MARKER')));
  const summary = documents.filter((d) => d.message === 'batch processed');
  assert.equal(summary.length, 1);
  assert.deepEqual([summary[0].records, summary[0].stored, summary[0].quarantined, summary[0].failed], [2, 1, 1, 0]);
});

test('the Lambda entry point reads its environment and writes to stdout', async () => {
  const aws = support.clients(moto.endpoint);
  await support.createResources(aws);
  const env = { ...support.settingsEnv({ ...ENV, TTL_DAYS: '30' }), AWS_ENDPOINT_URL: moto.endpoint };
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const written = [];
  const write = process.stdout.write;
  process.stdout.write = (chunk, ...rest) => { written.push(String(chunk)); return true || rest; };
  let response;
  try {
    delete require.cache[require.resolve('../index.js')];
    const fresh = require('../index.js');
    response = await fresh.handler(support.kinesisEvent([reading(1001, { value: 95 })]), contextWith(30_000));
  } finally {
    process.stdout.write = write;
    for (const name of Object.keys(env)) if (!(name in saved)) delete process.env[name];
    Object.assign(process.env, saved);
  }

  assert.deepEqual(response, { batchItemFailures: [] });
  const [item] = await support.scanItems(aws.dynamodb);
  assert.equal(item.reason, 'above max 80');
  assert.equal(item.ttl, Math.floor((RECEIVED + 200) / 1000) + 30 * 86400); // from the arrival
  assert.ok(written.join('').split('\n').some((line) => line.includes('"batch processed"')));
});

for (const [env, message] of [
  [{ S3_BUCKET: 'b' }, /DYNAMODB_TABLE/],
  [{ S3_BUCKET: 'b', DYNAMODB_TABLE: 't', THRESHOLDS: '[1]' }, /THRESHOLDS/],
  [{ S3_BUCKET: 'b', DYNAMODB_TABLE: 't', THRESHOLDS: '{"t": {"max": "high"}}' }, /THRESHOLDS/],
  [{ S3_BUCKET: 'b', DYNAMODB_TABLE: 't', UNKNOWN_SENSOR: 'drop' }, /UNKNOWN_SENSOR/],
]) {
  test(`a bad environment names the variable (${message.source})`, () => {
    assert.throws(() => index.settingsFromEnv(env), message);
  });
}
