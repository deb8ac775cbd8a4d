'use strict';
// The detector vectors (handler/vectors/detector/*.json, docs/contract.md 12) through the Node twin: every score,
// expected value and spread equal to the Python processor's to 1e-9 relative, and the same final state.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const index = require('../index.js');

const DIR = path.join(__dirname, '..', '..', 'vectors', 'detector');
const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

function close(a, b) {
  return a === b || Math.abs(a - b) <= Math.max(1e-9 * Math.max(Math.abs(a), Math.abs(b)), 1e-12);
}

const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('the detector vectors cover the contract', () => {
  const names = new Set(files.map((f) => path.basename(f, '.json')));
  for (const name of ['spike', 'level_shift', 'flatline', 'irregular', 'gap', 'repeated', 'late', 'sustained', 'stuck',
    'stuck_sustained', 'heavy_tail']) {
    assert.ok(names.has(name), name);
  }
});

for (const file of files) {
  test(`detector vector ${path.basename(file, '.json')}`, () => {
    const vector = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
    const params = Object.fromEntries(Object.entries(vector.params).map(([k, v]) => [camel(k), v]));
    assert.deepEqual(Object.keys(params).sort(), Object.keys(index.DETECTOR_DEFAULTS).sort());
    const [scored, state] = index.detectSeries(vector.points, params);
    assert.equal(scored.length, vector.expect.length);
    scored.forEach((s, i) => {
      const [score, expected, spread, learned, width] = vector.expect[i];
      const where = `${file} reading ${i}`;
      assert.ok(close(s.score, score), `${where}: score ${s.score} != ${score}`);
      assert.ok(close(s.expected, expected), `${where}: expected ${s.expected} != ${expected}`);
      assert.ok(close(s.spread, spread), `${where}: spread ${s.spread} != ${spread}`);
      assert.ok(close(s.width, width), `${where}: width ${s.width} != ${width}`);
      assert.equal(s.learned, learned, where);
      assert.ok(s.score >= 0 && s.score <= 1, where);
    });
    const list = index.detectorStateToList(state);
    list.forEach((v, i) => assert.ok(close(v, vector.state[i]), `${file} state[${i}] ${v} != ${vector.state[i]}`));
    assert.deepEqual(index.detectorStateToList(index.detectorStateFromList(list)), list);
  });
}

test('the presets are the contract\'s', () => {
  const onset = { probation: 150, longAlpha: 0.002, shortAlpha: 0.2, zScale: 0.54, clipZ: 10.0, relearn: 60,
    shiftZ: 2.0, gapIntervals: 20.0, peakDecay: 0.995, novelty: 1.0, flatMin: 10, flatFactor: 2.0, tailDown: 99 };
  const sustained = { ...onset, probation: 400, longAlpha: 0.0005, zScale: 5.5, clipZ: 4.0, relearn: 3600,
    shiftZ: 5.5, novelty: 0.0, tailDown: 0 };
  assert.deepEqual({ ...index.DETECTOR_PRESETS.onset }, onset);
  assert.deepEqual({ ...index.DETECTOR_PRESETS.sustained }, sustained);
  assert.deepEqual({ ...index.DETECTOR_DEFAULTS }, onset);
  assert.equal(index.DEFAULT_SENSITIVITY, 0.5);
});
