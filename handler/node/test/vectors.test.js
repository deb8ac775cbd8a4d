'use strict';
// Every behaviour vector in handler/vectors/ through the Node processor against a moto server: the same
// files and the same assertions as tests/handler/test_vectors.py.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const index = require('../index.js');
const support = require('./support.js');

let moto;
before(async () => { moto = await support.startMoto(); });
after(async () => { if (moto) await moto.stop(); });

/** One row per rejection: a line's `rejected` readings, or the line itself for a rejected record. */
function quarantineSummary(lines) {
  const expanded = lines.flatMap((line) => ('rejected' in line
    ? line.rejected.map((r) => ({ ...r, sequenceNumber: line.sequenceNumber })) : [line]));
  const rows = expanded.map((line) => Object.fromEntries(
    ['sequenceNumber', 'reason', 'sensorType'].filter((k) => k in line).map((k) => [k, line[k]]),
  ));
  const bySequence = (a, b) => {
    const [x, y] = [BigInt(a.sequenceNumber), BigInt(b.sequenceNumber)];
    return x < y ? -1 : Number(x > y);
  };
  return rows.sort((a, b) => bySequence(a, b) || support.compareCodePoints(a.sensorType || '', b.sensorType || ''));
}

function pick(values, keys) {
  return Object.fromEntries(keys.filter((k) => k in values).map((k) => [k, values[k]]));
}

test('the vector set covers the contract', () => {
  const names = new Set(support.vectorFiles().map((f) => path.basename(f, '.json')));
  for (const name of ['single_reading', 'multi_readings', 'timestamps', 'hostile', 'same_millisecond',
    'unknown_sensor_store']) assert.ok(names.has(name), name);
});

for (const file of support.vectorFiles()) {
  test(`vector ${path.basename(file, '.json')}`, async () => {
    const vector = support.loadVector(file);
    const { expect } = vector;
    await support.resetMoto(moto.endpoint);
    const aws = support.clients(moto.endpoint);
    await support.createResources(aws);
    const { runtime, lines } = support.makeRuntime(vector.env, aws);

    for (const earlier of vector.before || []) { // earlier batches on the same table: retries, late readings
      const shard = earlier.shardId || vector.shardId; // a batch of another shard: before a reshard
      const before = await index.processBatch(support.kinesisEvent(earlier.records, shard), null, runtime);
      assert.deepEqual(before, { batchItemFailures: earlier.batchItemFailures.map((s) => ({ itemIdentifier: s })) });
    }
    lines.length = 0;
    const response = await index.processBatch(
      support.kinesisEvent(vector.records, vector.shardId), null, runtime,
    );

    assert.deepEqual(response, { batchItemFailures: expect.batchItemFailures.map((s) => ({ itemIdentifier: s })) });
    assert.deepEqual(await support.scanItems(aws.dynamodb), expect.items);
    const quarantined = Object.values(await support.objects(aws.s3, 'quarantine/')).flatMap(support.jsonlGz);
    assert.deepEqual(quarantineSummary(quarantined), quarantineSummary(expect.quarantine));
    if ('quarantineLines' in expect) assert.equal(quarantined.length, expect.quarantineLines);
    if (expect.log) { // the counts of the `batch processed` line
      const summary = lines.map((line) => JSON.parse(line)).find((d) => d.message === 'batch processed');
      assert.deepEqual(pick(summary, Object.keys(expect.log)), expect.log);
    }
    const [environment, byType] = support.metricTotals(support.emfDocuments(lines));
    const metricNames = Object.keys(expect.metrics);
    assert.deepEqual(pick(environment, metricNames), expect.metrics);
    const typed = Object.fromEntries(Object.entries(byType).map(([t, v]) => [t, pick(v, metricNames)]));
    assert.deepEqual(typed, expect.metricsBySensorType);
    const archived = Object.values(await support.objects(aws.s3, 'raw/')).flatMap(support.jsonlGz);
    const sent = [...(vector.before || []), vector].flatMap((batch) => batch.records.map((r) => r.sequenceNumber));
    if (vector.before) { // a retried batch overwrites its archive object: every record is there
      const unique = (values) => [...new Set(values)].sort((a, b) => Number(BigInt(a) - BigInt(b)));
      assert.deepEqual(unique(archived.map((l) => l.sequenceNumber)), unique(sent));
    } else {
      assert.deepEqual(archived.map((l) => l.sequenceNumber), sent);
    }
  });
}
