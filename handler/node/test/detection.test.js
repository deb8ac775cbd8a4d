'use strict';
// The detector in the pipeline (docs/contract.md 12, "In the processor") in the Node twin: the THRESHOLDS
// entries that configure it and how a scored reading becomes an anomaly item (tests/handler/test_detection_pipeline.py
// checks the same rules in Python; handler/vectors/detection.json runs both end to end).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const index = require('../index.js');

const env = (thresholds) => ({ DYNAMODB_TABLE: 't', S3_BUCKET: 'b', THRESHOLDS: JSON.stringify(thresholds) });

test('an absent or off detector scores nothing', () => {
  assert.equal(index.detectorOf({}), null);
  assert.equal(index.detectorOf({ detector: null }), null);
  assert.equal(index.detectorOf({ detector: 'off', sensitivity: 7 }), null);
});

test('a detector takes its preset, sensitivity and probation', () => {
  const onset = index.detectorOf({ detector: 'onset' });
  assert.equal(onset.params, index.DETECTOR_PRESETS.onset);
  assert.equal(onset.sensitivity, 0.5);
  const sustained = index.detectorOf({ detector: 'sustained', sensitivity: 0.9, probation: 20 });
  assert.deepEqual([sustained.params.probation, sustained.params.zScale, sustained.sensitivity], [20, 5.5, 0.9]);
});

test('a malformed detector fails the start naming THRESHOLDS', () => {
  for (const spec of [{ detector: 'fast' }, { detector: 1 }, { detector: 'toString' },
    { detector: 'onset', sensitivity: 0 }, { detector: 'onset', sensitivity: 1.5 },
    { detector: 'onset', sensitivity: null }, { detector: 'onset', sensitivity: true },
    { detector: 'onset', probation: 2.5 }, { detector: 'onset', probation: -1 },
    { detector: 'onset', probation: 1_000_001 }]) {
    assert.throws(() => index.settingsFromEnv(env({ temperature: { max: 1, ...spec } })), /THRESHOLDS/,
      JSON.stringify(spec));
  }
});

test('series are scored apart in batch order, and a type without a detector by its bounds alone', () => {
  const settings = index.settingsFromEnv(env({
    temperature: { min: 10, max: 80, unit: 'C', detector: 'onset', probation: 5 },
    pressure: { min: 30, max: 150, unit: 'psi' },
  }));
  const values = [20.0, 20.1, 19.9, 20.0, 20.2, 20.1, 35.0];
  const make = (device, sensorType, at, value) => {
    const record = { shardId: 'shardId-0', sequenceNumber: '1', partitionKey: device, arrivedAt: 1_767_225_620_000,
      raw: Buffer.from('{}'), data: '' };
    const payload = { deviceId: device, timestamp: 1_767_225_600_000 + at * 1000, sensorType, value };
    const interpretation = index.interpret({ ...record, raw: Buffer.from(JSON.stringify(payload)) }, settings);
    return interpretation.readings[0];
  };
  const batch = values.flatMap((v, i) => [make('a', 'temperature', i, v), make('b', 'temperature', i, 20 + v / 100)]);
  const states = new Map();
  const judged = index.scoreReadings(batch, settings, states);
  const [alone, last] = index.detectSeries(values.map((v, i) => [1_767_225_600_000 + i * 1000, v]),
    { ...index.DETECTOR_PRESETS.onset, probation: 5 });
  assert.deepEqual(states.get('a\u0000temperature'), last);
  const spike = judged[12].item;
  assert.deepEqual([spike.rule.S, spike.status.S, spike.anomalyDetected.BOOL], ['model', 'ANOMALY', true]);
  assert.equal(Number(spike.score.N), alone[6].score);
  assert.equal(Number(spike.expectedLow.N), alone[6].expected - alone[6].width);
  assert.ok(judged.slice(0, 12).every((r) => !r.anomaly));
  const pressure = index.scoreReadings([make('a', 'pressure', 0, 200), make('a', 'pressure', 1, 100)], settings,
    states);
  assert.equal(pressure[0].item.rule.S, 'bound');
  assert.equal('score' in pressure[0].item, false);
  assert.equal(pressure[1].anomaly, false);
});
