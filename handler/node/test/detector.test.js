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

const learnedState = () => index.detectSeries([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3].map((v, i) => [1000 * i, v]),
  { ...index.DETECTOR_DEFAULTS, probation: 5, relearn: 3 })[1];

test('a warm function reads back the states it wrote without parsing them', (t) => {
  const learned = learnedState();
  const states = new Map([['temperature', learned], ['vibration', { ...learned, mean: -3.25 }]]);
  const text = index.statesText(states); // as the batch before wrote it
  const parse = t.mock.method(JSON, 'parse');
  const read = index.parseStates(text);
  assert.equal(parse.mock.callCount(), 0);
  assert.deepEqual(read, states);
  read.delete('temperature'); // a copy: what a batch does with its states is not remembered
  assert.deepEqual(index.parseStates(text), states);
  assert.deepEqual(index.readStates(text), states);
  assert.equal(parse.mock.callCount(), 1);
});

for (const number of [-0, NaN, Infinity]) {
  test(`only states that read back as themselves are remembered: ${number}`, () => {
    // -0 is stored as 0; a number that is not finite has no JSON text, so its state must fail to read, as it
    // would on a cold start
    // a state equal to it (-0 === 0) formatted first, in another text
    index.statesText(new Map([['t', { ...index.emptyDetectorState(), count: 5, mean: 0 }],
      ['u', { ...index.emptyDetectorState(), count: 6 }]]));
    const text = index.statesText(new Map([['t', { ...index.emptyDetectorState(), count: 5, mean: number }]]));
    if (number === 0) assert.ok(Object.is(index.parseStates(text).get('t').mean, 0));
    else assert.throws(() => index.parseStates(text));
  });
}

test('the states memo forgets the oldest past its bound', () => {
  const memo = new index.StatesMemo(64 * 10);
  const key = (n) => String(n).padStart(10, '0');
  for (let n = 0; n < 100; n += 1) memo.remember(key(n), new Map([['t', { count: n }]]));
  memo.remember('x'.repeat(11), new Map()); // longer than a 64th of the bound: not kept
  assert.equal(memo.chars, [...memo.states.keys()].reduce((sum, text) => sum + text.length, 0));
  assert.ok(memo.chars <= 640);
  assert.deepEqual(memo.recall(key(99)), new Map([['t', { count: 99 }]]));
  assert.equal(memo.recall(key(0)), null);
  assert.equal(memo.recall('x'.repeat(11)), null);
  assert.equal(index.KNOWN_STATES.maxChars, 1000000);
});

test('sequence numbers compare as numbers', () => {
  const numbers = ['0', '00', '7', '007', '10', '9', '49590338271490256608559692538361571095921575989136588898',
    '49590338271490256608559692538361571095921575989136588899', '149590338271490256608559692538361571095921575989136588898'];
  for (const a of numbers) {
    for (const b of numbers) {
      const expected = BigInt(a) < BigInt(b) ? -1 : (BigInt(a) > BigInt(b) ? 1 : 0);
      assert.equal(index.compareSequences(a, b), expected, `${a} vs ${b}`);
    }
  }
  assert.equal(index.compareSequences('7', 'shard-x'), 1); // digits sort after anything else, as in Python
  assert.equal(index.compareSequences('a', 'b'), -1);
});
