'use strict';
/**
 * iotpipe processor, Node twin of handler/python/index.py: a Kinesis batch -> S3 raw archive, DynamoDB
 * readings, S3 quarantine, EMF metrics. Same data contract and behaviour (handler/vectors/*.json run against
 * both); CommonJS, one file, only the AWS SDK v3 clients the Lambda Node.js runtime ships.
 *
 * Where JavaScript and Python differ by default, this file follows Python: JSON integers stay exact
 * (BigInt) so `50` and `50.0` are told apart like json.loads does, floats are written like Python's repr,
 * bounds like format(x, 'g'), ISO timestamps are parsed like datetime.fromisoformat, base64 like
 * b64decode(validate=True), and log lines are ASCII-escaped like json.dumps.
 */
const zlib = require('node:zlib');
const { performance } = require('node:perf_hooks');
const { S3Client, PutObjectCommand } = require('@aws-sdk/client-s3');
const { DynamoDBClient, BatchWriteItemCommand } = require('@aws-sdk/client-dynamodb');

const MIN_TIMESTAMP_MS = 946_684_800_000; // 2000-01-01T00:00:00Z: anything earlier is a clock that was never set
const MAX_FUTURE_MS = 86_400_000; // a reading more than a day ahead of its arrival has a wrong clock
const DAY_SECONDS = 86_400;
const BATCH_WRITE_LIMIT = 25;
const MAX_WRITE_ATTEMPTS = 10;
const BACKOFF_BASE_S = 0.025;
const BACKOFF_CAP_S = 1.0;
const POOL_SIZE = 16;
const DEFAULT_BUDGET_MS = 60_000;
// Whole-string matches (no `m` flag: `$` is the end of the text), as Python's fullmatch.
const DEVICE_ID_PATTERN = /^[A-Za-z0-9:_-]{1,128}$/;
const SENSOR_TYPE_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const UNIT_MAX_CHARS = 32;
// DynamoDB numbers: magnitude in [1e-130, 1e126); a value outside would fail the whole BatchWriteItem call.
const NUMBER_MIN_MAGNITUDE = 1e-130;
const NUMBER_MAX_MAGNITUDE = 1e126;
const EXACT_INT_LIMIT = 2n ** 53n;
// Python's json recursion limit: deeper documents are "not JSON" there, so they are here too.
const MAX_JSON_DEPTH = 990;
const RETRYABLE_ERRORS = new Set([
  'ProvisionedThroughputExceededException', 'ThrottlingException', 'RequestLimitExceeded',
  'InternalServerError', 'ServiceUnavailable', 'LimitExceededException',
]);

/** Nothing of the batch could be done; throwing makes Lambda retry (and bisect) the whole batch. */
class BatchFailed extends Error {
  constructor(message) {
    super(message);
    this.name = 'BatchFailed';
  }
}

// ---------------------------------------------------------------- JSON with Python's number semantics

/**
 * Parse JSON text like Python's json.loads (NaN/Infinity rejected): objects become Maps (insertion order,
 * no prototype keys), integers BigInt, other numbers Number. Throws SyntaxError on anything else.
 * @param {string} text
 * @returns {*}
 */
function parseJson(text) {
  const parser = new JsonParser(text);
  parser.skipSpace();
  const value = parser.value(0);
  parser.skipSpace();
  if (parser.pos !== text.length) parser.fail('extra data');
  return value;
}

const NUMBER = /(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
// Python refuses to convert longer integer text (sys.int_info.default_max_str_digits): not JSON there.
const MAX_INT_DIGITS = 4300;

class JsonParser {
  constructor(text) {
    this.text = text;
    this.pos = 0;
  }

  fail(what) {
    throw new SyntaxError(`${what} at ${this.pos}`);
  }

  skipSpace() {
    const { text } = this;
    while (this.pos < text.length && ' \t\n\r'.includes(text[this.pos])) this.pos += 1;
  }

  value(depth) {
    if (depth > MAX_JSON_DEPTH) this.fail('nested too deeply');
    const char = this.text[this.pos];
    if (char === '{') return this.object(depth);
    if (char === '[') return this.array(depth);
    if (char === '"') return this.string();
    if (char === '-' || (char >= '0' && char <= '9')) return this.number();
    for (const [word, result] of [['true', true], ['false', false], ['null', null]]) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return result;
      }
    }
    return this.fail('expecting value');
  }

  object(depth) {
    const result = new Map();
    this.pos += 1;
    this.skipSpace();
    if (this.text[this.pos] === '}') {
      this.pos += 1;
      return result;
    }
    for (;;) {
      if (this.text[this.pos] !== '"') this.fail('expecting property name');
      const key = this.string();
      this.skipSpace();
      if (this.text[this.pos] !== ':') this.fail("expecting ':'");
      this.pos += 1;
      this.skipSpace();
      result.set(key, this.value(depth + 1));
      this.skipSpace();
      const char = this.text[this.pos];
      this.pos += 1;
      if (char === '}') return result;
      if (char !== ',') this.fail("expecting ',' or '}'");
      this.skipSpace();
    }
  }

  array(depth) {
    const result = [];
    this.pos += 1;
    this.skipSpace();
    if (this.text[this.pos] === ']') {
      this.pos += 1;
      return result;
    }
    for (;;) {
      result.push(this.value(depth + 1));
      this.skipSpace();
      const char = this.text[this.pos];
      this.pos += 1;
      if (char === ']') return result;
      if (char !== ',') this.fail("expecting ',' or ']'");
      this.skipSpace();
    }
  }

  string() {
    const { text } = this;
    let out = '';
    let start = this.pos + 1;
    for (let i = start; i < text.length; i += 1) {
      const code = text.charCodeAt(i);
      if (code === 0x22) {
        this.pos = i + 1;
        return out + text.slice(start, i);
      }
      if (code < 0x20) break;
      if (code === 0x5c) {
        out += text.slice(start, i);
        const [decoded, length] = this.escape(i);
        out += decoded;
        i += length - 1;
        start = i + 1;
      }
    }
    this.pos = text.length;
    return this.fail('unterminated string');
  }

  escape(at) {
    const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
    const char = this.text[at + 1];
    if (char in simple) return [simple[char], 2];
    const hex = this.text.slice(at + 2, at + 6);
    if (char !== 'u' || !/^[0-9a-fA-F]{4}$/.test(hex)) {
      this.pos = at;
      this.fail('invalid escape');
    }
    return [String.fromCharCode(parseInt(hex, 16)), 6];
  }

  number() {
    NUMBER.lastIndex = this.pos;
    const match = NUMBER.exec(this.text);
    if (!match) return this.fail('expecting value');
    if (match[2] !== undefined || match[3] !== undefined) {
      this.pos += match[0].length;
      return Number(match[0]);
    }
    if (match[1].replace('-', '').length > MAX_INT_DIGITS) this.fail('integer too long');
    this.pos += match[0].length;
    return BigInt(match[1]);
  }
}

// ---------------------------------------------------------------- Python-compatible number text

/**
 * A float as Python's repr() writes it (`50.0`, `1e+16`, `1.5e-05`).
 * @param {number} x
 * @returns {string}
 */
function pyFloatRepr(x) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, exponentText] = x.toExponential().split('e');
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 16) return `${mantissa}e${exponentSuffix(exponent)}`;
  const sign = x < 0 ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  return sign + placeDecimalPoint(digits, exponent, true);
}

/**
 * A number as Python's format(x, 'g') writes it (6 significant digits, `80`, `1.23457e+06`).
 * @param {number} x
 * @returns {string}
 */
function formatG(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : (x > 0 ? 'inf' : '-inf');
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mantissa, exponentText] = x.toExponential(5).split('e');
  const exponent = Number(exponentText);
  const trimmed = mantissa.replace(/\.?0+$/, '');
  if (exponent < -4 || exponent >= 6) return `${trimmed}e${exponentSuffix(exponent)}`;
  const sign = x < 0 ? '-' : '';
  return sign + placeDecimalPoint(trimmed.replace('-', '').replace('.', ''), exponent, false);
}

function exponentSuffix(exponent) {
  return (exponent < 0 ? '-' : '+') + String(Math.abs(exponent)).padStart(2, '0');
}

/** Significant `digits` d.ddd x 10^exponent in fixed notation; `keepPointZero` writes `50.0` rather than `50`. */
function placeDecimalPoint(digits, exponent, keepPointZero) {
  if (exponent < 0) return `0.${'0'.repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const fraction = digits.slice(exponent + 1);
  if (fraction) return `${whole}.${fraction}`;
  return keepPointZero ? `${whole}.0` : whole;
}

/** Python's round() for a half-way case: to the even neighbour. */
function roundHalfEven(x) {
  const rounded = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : rounded;
}

/** A JSON number that is finite as a float: a BigInt beyond a double's range is not (as in Python). */
function isNumber(value) {
  return (typeof value === 'bigint' || typeof value === 'number') && Number.isFinite(Number(value));
}

// ---------------------------------------------------------------- settings and runtime

/**
 * The processor's configuration from the Lambda environment variables of the data contract.
 * Throws Error naming the variable when one is missing or malformed.
 * @param {Record<string, string|undefined>} env
 */
function settingsFromEnv(env) {
  const missing = ['DYNAMODB_TABLE', 'S3_BUCKET'].filter((name) => !env[name]);
  if (missing.length) throw new Error(`environment variable(s) ${missing.join(', ')} must be set`);
  const unknownSensor = env.UNKNOWN_SENSOR || 'quarantine';
  if (!['quarantine', 'store'].includes(unknownSensor)) {
    throw new Error(`UNKNOWN_SENSOR must be 'quarantine' or 'store', not '${unknownSensor}'`);
  }
  const ttlText = String(env.TTL_DAYS || '90').trim();
  if (!/^[-+]?[0-9]+$/.test(ttlText)) throw new Error(`TTL_DAYS must be an integer, not '${ttlText}'`);
  return Object.freeze({
    table: env.DYNAMODB_TABLE,
    bucket: env.S3_BUCKET,
    environment: env.ENVIRONMENT || 'dev',
    thresholds: parseThresholds(env.THRESHOLDS || '{}'),
    unknownSensor,
    ttlDays: Number(ttlText),
    namespace: env.METRIC_NAMESPACE || 'IoT/Manufacturing',
  });
}

function parseThresholds(text) {
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const bound = (v) => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'number') throw new Error(`bound ${JSON.stringify(v)} is not a number`);
    return v;
  };
  try {
    const raw = JSON.parse(text);
    if (!isObject(raw)) throw new Error('not an object');
    const thresholds = new Map();
    for (const [name, spec] of Object.entries(raw)) {
      if (!isObject(spec)) throw new Error(`${name} is not an object`);
      thresholds.set(name, Object.freeze({ min: bound(spec.min), max: bound(spec.max), unit: String(spec.unit || '') }));
    }
    return thresholds;
  } catch (err) {
    throw new Error(`THRESHOLDS must be a JSON object sensorType -> {min, max, unit}: ${err.message}`);
  }
}

/**
 * Everything the processor talks to; tests and the benchmark build their own.
 * @param {object} options settings, s3, dynamodb (SDK v3 clients), and optionally emit(line), sleep(seconds),
 *   clockMs(), random(), poolSize
 */
function createRuntime(options) {
  return {
    emit: (line) => process.stdout.write(`${line}\n`),
    sleep: (seconds) => new Promise((resolve) => { setTimeout(resolve, seconds * 1000); }),
    clockMs: () => Date.now(),
    random: Math.random,
    poolSize: POOL_SIZE,
    ...options,
  };
}

/**
 * The Lambda runtime: settings from the environment and SDK clients. Writes go straight to stdout rather
 * than console.log, which the Lambda runtime prefixes (an EMF line must be the JSON document alone).
 * @param {Record<string, string|undefined>} [env]
 */
function runtimeFromEnv(env = process.env) {
  // A custom endpoint (moto, LocalStack) has no per-bucket DNS names.
  const config = { maxAttempts: 3, requestHandler: { connectionTimeout: 3_000, requestTimeout: 10_000 } };
  return createRuntime({
    settings: settingsFromEnv(env),
    s3: new S3Client({ ...config, forcePathStyle: Boolean(env.AWS_ENDPOINT_URL) }),
    dynamodb: new DynamoDBClient(config),
  });
}

// ---------------------------------------------------------------- decoding and validation (pure)

function decodeBase64(text) {
  const match = /^([A-Za-z0-9+/]*)(={0,2})$/.exec(text);
  if (!match) return null;
  const rest = match[1].length % 4;
  const padding = match[2].length;
  if (rest === 1 || (rest === 2 && padding !== 2) || (rest === 3 && padding !== 1)) return null;
  return Buffer.from(text, 'base64');
}

/**
 * A Kinesis event record as { shardId, sequenceNumber, partitionKey, arrivedAt, raw (Buffer|null), data }.
 * @param {object} eventRecord
 * @param {number} nowMs
 */
function decodeRecord(eventRecord, nowMs) {
  const kinesis = eventRecord.kinesis || {};
  const data = String(kinesis.data || '');
  const arrival = kinesis.approximateArrivalTimestamp;
  const arrivedAt = typeof arrival === 'number' ? roundHalfEven(arrival * 1000) : nowMs;
  const shardId = String(eventRecord.eventID || '').split(':', 1)[0] || 'shardId-unknown';
  return Object.freeze({
    shardId,
    sequenceNumber: String(kinesis.sequenceNumber || ''),
    partitionKey: String(kinesis.partitionKey || ''),
    arrivedAt,
    raw: decodeBase64(data),
    data,
  });
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function utf8Text(raw) {
  try {
    return UTF8.decode(raw);
  } catch {
    return null;
  }
}

/**
 * Validate one record against the data contract and build its DynamoDB items.
 * @returns {{readings: object[], quarantined: object[], timestampReplaced: boolean}}
 */
function interpret(record, settings) {
  const reject = (reason) => ({ readings: [], quarantined: [quarantine(record, reason)], timestampReplaced: false });
  if (record.raw === null) return reject('data is not base64');
  const text = utf8Text(record.raw);
  if (text === null) return reject('data is not UTF-8');
  let payload;
  try {
    payload = parseJson(text);
  } catch {
    return reject('data is not JSON');
  }
  if (!(payload instanceof Map)) return reject('payload is not a JSON object');
  const device = payload.get('deviceId');
  if (device === undefined || device === null || device === '') return reject('missing deviceId');
  if (typeof device !== 'string' || !DEVICE_ID_PATTERN.test(device)) return reject('invalid deviceId');
  const topicDevice = payload.get('topicDeviceId');
  if (topicDevice !== undefined && topicDevice !== null && topicDevice !== device) {
    return reject('deviceId differs from topic');
  }
  const receivedAt = plausibleReceivedAt(payload.get('receivedAt'), record.arrivedAt);
  const [timestamp, replaced] = resolveTimestamp(payload.get('timestamp'), receivedAt);

  let pairs;
  let unit = null;
  if (payload.has('readings')) {
    const readings = payload.get('readings');
    if (!(readings instanceof Map) || readings.size === 0) return reject('readings is not a non-empty object');
    pairs = [...readings];
  } else {
    const sensorType = payload.get('sensorType');
    if (sensorType === undefined || sensorType === null || sensorType === '') return reject('missing sensorType');
    pairs = [[sensorType, payload.get('value')]];
    unit = payload.has('unit') ? payload.get('unit') : null;
    if (unit !== null && (typeof unit !== 'string' || [...unit].length > UNIT_MAX_CHARS)) return reject('invalid unit');
  }

  const context = { record, settings, device, unit: unit || null, timestamp, receivedAt };
  const outcomes = pairs.map(([sensorType, value]) => buildReading(context, sensorType, value));
  return {
    readings: outcomes.filter((o) => !o.reason),
    quarantined: outcomes.filter((o) => o.reason),
    timestampReplaced: replaced,
  };
}

function quarantine(record, reason, sensorType = null) {
  return { record, reason, sensorType };
}

/**
 * The rule's receivedAt in epoch ms, or the Kinesis arrival time when it is missing or implausible (before 2000
 * or more than a day after arrival): 1e200 would make numbers DynamoDB rejects, and 5 would date the reading 1970,
 * whose TTL deletes it at once.
 * @param {*} value the payload's receivedAt
 * @param {number} arrivedAt
 * @returns {number}
 */
function plausibleReceivedAt(value, arrivedAt) {
  if (!isNumber(value)) return arrivedAt;
  const millis = Math.trunc(Number(value));
  return millis >= MIN_TIMESTAMP_MS && millis <= arrivedAt + MAX_FUTURE_MS ? millis : arrivedAt;
}

/**
 * The reading time in epoch ms and whether receivedAt replaced a given but absurd or unparseable one.
 * @param {*} value the payload's timestamp (Number, BigInt, string or anything else)
 * @param {number} receivedAt
 * @returns {[number, boolean]}
 */
function resolveTimestamp(value, receivedAt) {
  let millis = null;
  if (typeof value === 'string') millis = parseIsoMillis(value);
  else if (isNumber(value)) millis = typeof value === 'bigint' ? Number(value) : Math.floor(value);
  if (millis === null || millis < MIN_TIMESTAMP_MS || millis > receivedAt + MAX_FUTURE_MS) {
    return [receivedAt, value !== undefined && value !== null];
  }
  return [millis, false];
}

/**
 * ISO 8601 text as epoch ms (no offset means UTC), or null; accepts what CPython's
 * datetime.fromisoformat accepts (its C parser, mirrored byte for byte over the UTF-8 text).
 * @param {string} text
 * @returns {number|null}
 */
function parseIsoMillis(text) {
  const clean = isoSanitized(text);
  if (clean === null) return null;
  const bytes = Buffer.from(clean, 'utf8');
  const at = (i) => (i < bytes.length ? bytes[i] : 0); // C strings end in NUL
  const separator = isoSeparator(at, bytes.length);
  const date = parseIsoDate(at, separator);
  if (!date) return null;
  let time = { hour: 0, minute: 0, second: 0, micro: 0, offsetSeconds: 0, offsetMicro: 0 };
  if (bytes.length > separator) {
    const start = separator + utf8Length(at(separator)); // the separator may be any one character
    time = parseIsoTime((i) => at(start + i), bytes.length - start);
    if (!time) return null;
  }
  return isoEpochMillis(date, time);
}

/** CPython's rule: at least 7 characters; a lone surrogate only as the separator (read as `T`). */
function isoSanitized(text) {
  const chars = [...text]; // code points; a lone surrogate stays one element
  if (chars.length < 7) return null;
  const isLone = (c) => c !== undefined && c.length === 1 && c >= '\ud800' && c <= '\udfff';
  const position = [7, 8, 10].find((i) => isLone(chars[i]));
  if (position !== undefined) chars[position] = 'T';
  return chars.some(isLone) ? null : chars.join('');
}

function utf8Length(lead) {
  if ((lead & 0x80) === 0) return 1;
  if ((lead & 0xf0) === 0xe0) return 3;
  return (lead & 0xf0) === 0xf0 ? 4 : 2;
}

const isDigit = (byte) => byte >= 0x30 && byte <= 0x39;
const DASH = 0x2d;
const WEEK = 0x57;

function digitsAt(at, start, count) {
  let value = 0;
  for (let i = start; i < start + count; i += 1) {
    if (!isDigit(at(i))) return null;
    value = value * 10 + at(i) - 0x30;
  }
  return value;
}

function isoSeparator(at, length) {
  if (length === 7) return 7;
  if (at(4) === DASH) {
    if (at(5) !== WEEK) return 10;
    if (length < 8) return -1;
    if (length > 8 && at(8) === DASH) {
      if (length === 9) return -1;
      return length > 10 && isDigit(at(10)) ? 8 : 10;
    }
    return 8;
  }
  if (at(4) !== WEEK) return 8;
  let index = 7;
  while (index < length && isDigit(at(index))) index += 1;
  if (index < 9) return index;
  return index % 2 === 0 ? 7 : 8;
}

function parseIsoDate(at, length) {
  const year = digitsAt(at, 0, 4);
  if (year === null) return null;
  const dashed = at(4) === DASH;
  let pos = dashed ? 5 : 4;
  if (at(pos) === WEEK) {
    const week = digitsAt(at, pos + 1, 2);
    if (week === null) return null;
    pos += 3;
    let weekday = 1;
    if (pos < length) {
      if (dashed && at(pos++) !== DASH) return null;
      weekday = digitsAt(at, pos, 1);
      if (weekday === null) return null;
    }
    return isoWeekToDate(year, week, weekday);
  }
  const month = digitsAt(at, pos, 2);
  if (month === null) return null;
  pos += 2;
  if (dashed && at(pos++) !== DASH) return null;
  const day = digitsAt(at, pos, 2);
  return day === null ? null : { year, month, day };
}

function isoWeekToDate(year, week, weekday) {
  if (year < 1 || year > 9999 || weekday < 1 || weekday > 7) return null;
  const jan4 = utcDate(year, 1, 4);
  const jan4Weekday = (jan4.getUTCDay() + 6) % 7; // Monday = 0
  const dec28Week = isoWeekOf(year);
  if (week < 1 || week > dec28Week) return null;
  const ms = jan4.getTime() + ((week - 1) * 7 + (weekday - 1) - jan4Weekday) * DAY_SECONDS * 1000;
  const date = new Date(ms);
  return { year: date.getUTCFullYear(), month: date.getUTCMonth() + 1, day: date.getUTCDate() };
}

function isoWeekOf(year) {
  // A year has 53 ISO weeks when it starts on a Thursday, or on a Wednesday in a leap year.
  const first = utcDate(year, 1, 1).getUTCDay();
  const leap = utcDate(year, 2, 29).getUTCMonth() === 1;
  return first === 4 || (leap && first === 3) ? 53 : 52;
}

function utcDate(year, month, day) {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date;
}

function parseHmsFraction(at, end) {
  const values = [0, 0, 0];
  let pos = 0;
  let separated = true;
  for (let i = 0; i < 3; i += 1) {
    const value = digitsAt(at, pos, 2);
    if (value === null) return { error: true };
    values[i] = value;
    pos += 2;
    const char = at(pos++);
    if (i === 0) separated = char === 0x3a;
    if (pos >= end) return { values, micro: 0, trailing: char !== 0 };
    if (separated && char === 0x3a) continue;
    if (char === 0x2e || char === 0x2c) break;
    if (separated) return { error: true };
    pos -= 1;
  }
  const count = Math.min(end - pos, 6);
  let micro = digitsAt(at, pos, count);
  if (micro === null || count <= 0) return { error: true };
  micro *= 10 ** (6 - count);
  pos += count;
  while (isDigit(at(pos))) pos += 1;
  return { values, micro, trailing: at(pos) !== 0 };
}

function parseIsoTime(at, length) {
  let tz = 0;
  do {
    if ([0x5a, 0x2b, 0x2d].includes(at(tz))) break;
    tz += 1;
  } while (tz < length);
  const clock = parseHmsFraction(at, tz);
  if (clock.error) return null;
  const [hour, minute, second] = clock.values;
  const time = { hour, minute, second, micro: clock.micro, offsetSeconds: 0, offsetMicro: 0 };
  if (tz === length) return clock.trailing ? null : time;
  if (at(tz) === 0x5a) return at(tz + 1) === 0 ? time : null;
  const sign = at(tz) === DASH ? -1 : 1;
  const offset = parseHmsFraction((i) => at(tz + 1 + i), length - tz - 1);
  if (offset.error || offset.trailing) return null;
  const [oh, om, os] = offset.values;
  time.offsetSeconds = sign * (oh * 3600 + om * 60 + os);
  time.offsetMicro = sign * offset.micro;
  return time;
}

function isoEpochMillis(date, time) {
  const { year, month, day } = date;
  if (year < 1 || month < 1 || month > 12 || day < 1) return null;
  if (day > new Date(Date.UTC(2000, month, 0)).getUTCDate() && !(month === 2 && day === 29)) return null;
  if (month === 2 && day === 29 && utcDate(year, 2, 29).getUTCMonth() !== 1) return null;
  if (time.hour > 23 || time.minute > 59 || time.second > 59) return null;
  const offsetMicro = time.offsetSeconds * 1e6 + time.offsetMicro;
  if (Math.abs(offsetMicro) >= DAY_SECONDS * 1e6) return null;
  const local = utcDate(year, month, day).getTime() + ((time.hour * 60 + time.minute) * 60 + time.second) * 1000;
  return local - time.offsetSeconds * 1000 + Math.floor((time.micro - time.offsetMicro) / 1000);
}

/**
 * A reading's value as DynamoDB number text and Number, or the quarantine reason (a string).
 * @param {*} value Number, BigInt (a JSON integer) or anything else
 * @returns {[string, number]|string}
 */
function numberText(value) {
  if (value === undefined || value === null) return 'missing value';
  if (typeof value !== 'number' && typeof value !== 'bigint') return 'value is not a number';
  const number = Number(value);
  if (typeof value === 'bigint' && !Number.isFinite(number)) return 'value out of range';
  if (!Number.isFinite(number)) return 'value is not finite';
  if (number !== 0 && !(Math.abs(number) >= NUMBER_MIN_MAGNITUDE && Math.abs(number) < NUMBER_MAX_MAGNITUDE)) {
    return 'value out of range';
  }
  if (typeof value === 'bigint' && (value < 0n ? -value : value) < EXACT_INT_LIMIT) return [value.toString(), number];
  return [pyFloatRepr(number), number];
}

/**
 * `above max <max>` / `below min <min>` when the value crosses a bound, else null.
 * @param {number} value
 * @param {{min: number|null, max: number|null}} threshold
 */
function anomalyReason(value, threshold) {
  if (threshold.max !== null && value > threshold.max) return `above max ${formatG(threshold.max)}`;
  if (threshold.min !== null && value < threshold.min) return `below min ${formatG(threshold.min)}`;
  return null;
}

function buildReading(context, sensorType, value) {
  const { record, settings, device, timestamp, receivedAt } = context;
  if (typeof sensorType !== 'string' || !SENSOR_TYPE_PATTERN.test(sensorType)) {
    return quarantine(record, 'invalid sensorType');
  }
  const number = numberText(value);
  if (typeof number === 'string') return quarantine(record, number, sensorType);
  const [text, asNumber] = number;
  const threshold = settings.thresholds.get(sensorType) || null;
  if (threshold === null && settings.unknownSensor === 'quarantine') {
    return quarantine(record, 'unknown sensorType', sensorType);
  }
  const reason = threshold ? anomalyReason(asNumber, threshold) : null;
  const status = threshold === null ? 'UNCHECKED' : (reason ? 'ANOMALY' : 'NORMAL');
  const unit = context.unit || (threshold ? threshold.unit : '') || '';
  const padded = String(timestamp).padStart(13, '0');
  const sortKey = `${padded}#${sensorType}`;
  const item = {
    deviceId: { S: device },
    sk: { S: sortKey },
    timestamp: { N: String(timestamp) },
    sensorType: { S: sensorType },
    value: { N: text },
    status: { S: status },
    anomalyDetected: { BOOL: reason !== null },
    receivedAt: { N: String(receivedAt) },
    ttl: { N: String(Math.floor(timestamp / 1000) + settings.ttlDays * DAY_SECONDS) },
    shardId: { S: record.shardId },
    sequenceNumber: { S: record.sequenceNumber },
  };
  if (unit) item.unit = { S: unit };
  if (reason) {
    item.reason = { S: reason };
    item.anomalyDay = { S: new Date(timestamp).toISOString().slice(0, 10) };
    item.anomalySk = { S: `${padded}#${device}#${sensorType}` };
  }
  return { record, key: `${device}\u0000${sortKey}`, sensorType, valueText: text, unit, anomaly: reason !== null, item };
}

/**
 * Readings with distinct keys (first wins); a later same-key reading with another value is quarantined.
 * One BatchWriteItem call rejects duplicate keys, and two calls racing on one key would make the stored
 * value depend on timing; an identical repeat (a device's retried publish) is counted, not stored twice.
 */
function deduplicate(readings) {
  const kept = new Map();
  const conflicts = [];
  let repeats = 0;
  for (const reading of readings) {
    const first = kept.get(reading.key);
    if (!first) kept.set(reading.key, reading);
    else if (first.valueText === reading.valueText && first.unit === reading.unit) repeats += 1;
    else conflicts.push(quarantine(reading.record, 'duplicate key with a different value', reading.sensorType));
  }
  return { readings: [...kept.values()], conflicts, repeats };
}

// ---------------------------------------------------------------- S3 objects

/** `year=/month=/day=/hour=/<shardId>/<firstSeq>-<lastSeq>.jsonl.gz` (UTC of the first arrival). */
function batchSuffix(records) {
  const first = records[0];
  const iso = new Date(first.arrivedAt).toISOString();
  return `year=${iso.slice(0, 4)}/month=${iso.slice(5, 7)}/day=${iso.slice(8, 10)}/hour=${iso.slice(11, 13)}/`
    + `${first.shardId}/${first.sequenceNumber}-${records[records.length - 1].sequenceNumber}.jsonl.gz`;
}

function dataFields(record) {
  if (record.raw === null) return { data: record.data };
  const text = utf8Text(record.raw);
  return text === null ? { dataBase64: record.data } : { data: text };
}

/** Gzip JSON lines (gzip's mtime is 0, so the same batch gives the same content). */
function jsonlGzip(lines) {
  return zlib.gzipSync(lines.map((line) => `${JSON.stringify(line)}\n`).join(''), { level: 6 });
}

function archiveLines(records) {
  return records.map((r) => ({
    sequenceNumber: r.sequenceNumber, partitionKey: r.partitionKey, arrivedAt: r.arrivedAt, ...dataFields(r),
  }));
}

function quarantineLines(quarantined) {
  return quarantined.map((q) => ({
    sequenceNumber: q.record.sequenceNumber,
    partitionKey: q.record.partitionKey,
    reason: q.reason,
    ...(q.sensorType !== null ? { sensorType: q.sensorType } : {}),
    ...dataFields(q.record),
  }));
}

function putObject(runtime, key, body) {
  return runtime.s3.send(new PutObjectCommand({
    Bucket: runtime.settings.bucket, Key: key, Body: body, ContentType: 'application/gzip',
  }));
}

// ---------------------------------------------------------------- DynamoDB writes

/**
 * BatchWriteItem `items` (at most 25), retrying UnprocessedItems and throttling with backoff and full jitter
 * until `deadline` (performance.now() seconds); resolves to the items that were still not written.
 */
async function writeItems(runtime, items, deadline) {
  const { table } = runtime.settings;
  let pending = items;
  for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt += 1) {
    try {
      const response = await runtime.dynamodb.send(new BatchWriteItemCommand({
        RequestItems: { [table]: pending.map((item) => ({ PutRequest: { Item: item } })) },
      }));
      pending = ((response.UnprocessedItems || {})[table] || []).map((r) => r.PutRequest.Item);
    } catch (err) {
      const code = errorCode(err);
      log(runtime, 'ERROR', 'BatchWriteItem failed', {
        error: code, detail: errorDetail(err), items: pending.length, attempt: attempt + 1,
      });
      // An AWS answer that retrying cannot change; network errors and throttling are worth another try.
      if (!RETRYABLE_ERRORS.has(code) && isServiceError(err)) return pending;
    }
    if (pending.length === 0) return [];
    const delay = runtime.random() * Math.min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt);
    if (attempt + 1 === MAX_WRITE_ATTEMPTS || performance.now() / 1000 + delay > deadline) break;
    await runtime.sleep(delay);
  }
  return pending;
}

// ---------------------------------------------------------------- metrics and logs

function isServiceError(err) {
  return Boolean(err) && typeof err.$fault === 'string';
}

function errorCode(err) {
  return String((err && (err.Code || err.name)) || 'Error');
}

function errorDetail(err) {
  return `${errorCode(err)}: ${err && err.message}`.slice(0, 500);
}

/** JSON with DEL and non-ASCII escaped, as Python's json.dumps writes log lines. */
function asciiJson(value) {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function log(runtime, level, message, fields = {}) {
  runtime.emit(asciiJson({ level, message, ...fields }));
}

/**
 * CloudWatch Embedded Metric Format documents: one for `Environment`, one per sensor type.
 * @param {object} settings
 * @param {number} nowMs
 * @param {object} totals stored, anomalies, quarantined, failed
 * @param {number} lagMs
 * @param {number} durationMs
 * @param {Map<string, [number, number]>} byType sensorType -> [stored, anomalies]
 */
function emfLines(settings, nowMs, totals, lagMs, durationMs, byType) {
  const documentOf = (dimensions, metrics, extra) => {
    const doc = {
      _aws: {
        Timestamp: nowMs,
        CloudWatchMetrics: [{
          Namespace: settings.namespace,
          Dimensions: [dimensions],
          Metrics: metrics.map(([name, , unit]) => ({ Name: name, Unit: unit })),
        }],
      },
      Environment: settings.environment,
      ...extra,
    };
    for (const [name, value] of metrics) doc[name] = value;
    return doc;
  };
  const lines = [documentOf(['Environment'], [
    ['SensorReadingsProcessed', totals.stored, 'Count'],
    ['AnomaliesDetected', totals.anomalies, 'Count'],
    ['RecordsQuarantined', totals.quarantined, 'Count'],
    ['RecordsFailed', totals.failed, 'Count'],
    ['IngestLag', lagMs, 'Milliseconds'],
    ['BatchDuration', durationMs, 'Milliseconds'],
  ], {})];
  for (const sensorType of [...byType.keys()].sort(compareCodePoints)) {
    const [stored, anomalies] = byType.get(sensorType);
    lines.push(documentOf(['Environment', 'SensorType'], [
      ['SensorReadingsProcessed', stored, 'Count'],
      ['AnomaliesDetected', anomalies, 'Count'],
    ], { SensorType: sensorType }));
  }
  return lines;
}

function compareCodePoints(a, b) {
  const left = [...a].map((c) => c.codePointAt(0));
  const right = [...b].map((c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(left.length, right.length); i += 1) {
    if (left[i] !== right[i]) return left[i] - right[i];
  }
  return left.length - right.length;
}

// ---------------------------------------------------------------- the batch

/** Run `tasks` (functions returning promises) at most `limit` at a time; results in order, like a thread pool. */
async function runLimited(tasks, limit) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const index = next;
      next += 1;
      results[index] = await tasks[index]().then((value) => ({ value }), (error) => ({ error }));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

function groupByShard(records) {
  const byShard = new Map();
  for (const record of records) {
    if (!byShard.has(record.shardId)) byShard.set(record.shardId, []);
    byShard.get(record.shardId).push(record);
  }
  return byShard;
}

async function archive(runtime, byShard, suffixes, recordCount) {
  const shards = [...byShard.keys()];
  const results = await runLimited(shards.map((shard) => () => putObject(
    runtime, `raw/${suffixes.get(shard)}`, jsonlGzip(archiveLines(byShard.get(shard))),
  )), runtime.poolSize);
  const failure = results.find((r) => 'error' in r);
  if (failure) {
    const err = failure.error;
    log(runtime, 'ERROR', 'raw archive write failed; the batch will be retried', {
      error: errorCode(err), detail: errorDetail(err), records: recordCount,
    });
    throw new BatchFailed(`raw archive write to s3://${runtime.settings.bucket} failed: ${errorDetail(err)}`);
  }
}

/** Writes the readings and the quarantine objects; resolves to the set of sequence numbers that failed. */
async function store(runtime, readings, quarantined, byShard, suffixes, deadline) {
  const chunks = [];
  for (let i = 0; i < readings.length; i += BATCH_WRITE_LIMIT) chunks.push(readings.slice(i, i + BATCH_WRITE_LIMIT));
  const shards = [...byShard.keys()].filter((shard) => quarantined.some((q) => q.record.shardId === shard));
  const tasks = [
    ...chunks.map((chunk) => () => writeItems(runtime, chunk.map((r) => r.item), deadline)),
    ...shards.map((shard) => () => putObject(runtime, `quarantine/${suffixes.get(shard)}`,
      jsonlGzip(quarantineLines(quarantined.filter((q) => q.record.shardId === shard))))),
  ];
  const results = await runLimited(tasks, runtime.poolSize);
  const failed = new Set();
  for (const result of results.slice(0, chunks.length)) {
    if ('error' in result) throw result.error;
    for (const item of result.value) failed.add(item.sequenceNumber.S);
  }
  const quarantineFailed = new Set();
  results.slice(chunks.length).forEach((result, i) => {
    if (!('error' in result)) return;
    log(runtime, 'ERROR', 'quarantine write failed', { error: errorCode(result.error), detail: errorDetail(result.error) });
    for (const q of quarantined) if (q.record.shardId === shards[i]) quarantineFailed.add(q.record.sequenceNumber);
  });
  return { failed: new Set([...failed, ...quarantineFailed]), quarantineFailed };
}

/**
 * Process one Kinesis batch; resolves to the partial-batch response (`batchItemFailures`).
 * Throws BatchFailed when the raw archive cannot be written or nothing of the batch could be stored.
 * @param {object} event the Lambda Kinesis event
 * @param {object|null} context the Lambda context (getRemainingTimeInMillis) or null
 * @param {object} runtime from createRuntime()
 */
async function processBatch(event, context, runtime) {
  const started = performance.now() / 1000;
  const nowMs = runtime.clockMs();
  const remainingMs = context && context.getRemainingTimeInMillis ? context.getRemainingTimeInMillis() : DEFAULT_BUDGET_MS;
  const deadline = started + (remainingMs - Math.min(5_000, Math.floor(remainingMs / 5))) / 1000;
  const records = ((event && event.Records) || []).map((r) => decodeRecord(r, nowMs));
  if (records.length === 0) return { batchItemFailures: [] };

  const byShard = groupByShard(records);
  const suffixes = new Map([...byShard].map(([shard, group]) => [shard, batchSuffix(group)]));
  const archived = archive(runtime, byShard, suffixes, records.length);
  // Validation runs while the archive is in flight; nothing is written before the archive exists.
  const interpretations = records.map((record) => interpret(record, runtime.settings));
  const { readings, conflicts, repeats } = deduplicate(interpretations.flatMap((i) => i.readings));
  const quarantined = [...interpretations.flatMap((i) => i.quarantined), ...conflicts];
  await archived;
  const { failed, quarantineFailed } = await store(runtime, readings, quarantined, byShard, suffixes, deadline);

  const writtenQuarantine = quarantined.filter((q) => !quarantineFailed.has(q.record.sequenceNumber));
  for (const q of writtenQuarantine) {
    log(runtime, 'WARN', 'record quarantined', {
      reason: q.reason, shardId: q.record.shardId, sequenceNumber: q.record.sequenceNumber,
      partitionKey: q.record.partitionKey, ...(q.sensorType !== null ? { sensorType: q.sensorType } : {}),
    });
  }
  const stored = readings.filter((r) => !failed.has(r.record.sequenceNumber));
  summarize(runtime, { records, interpretations, stored, writtenQuarantine, failed, repeats, byShard, nowMs, started });

  const allSequences = new Set(records.map((r) => r.sequenceNumber));
  if (failed.size && [...allSequences].every((s) => failed.has(s))) {
    throw new BatchFailed(`no record of the batch could be stored (${records.length} records)`);
  }
  return { batchItemFailures: [...failed].sort(compareSequences).map((s) => ({ itemIdentifier: s })) };
}

function summarize(runtime, batch) {
  const { records, interpretations, stored, writtenQuarantine, failed, repeats, byShard, nowMs, started } = batch;
  const byType = new Map();
  for (const reading of stored) {
    const [count, anomalies] = byType.get(reading.sensorType) || [0, 0];
    byType.set(reading.sensorType, [count + 1, anomalies + (reading.anomaly ? 1 : 0)]);
  }
  const totals = {
    records: records.length,
    stored: stored.length,
    anomalies: stored.filter((r) => r.anomaly).length,
    quarantined: writtenQuarantine.length,
    failed: failed.size,
    duplicates: repeats,
    timestampsReplaced: interpretations.filter((i) => i.timestampReplaced).length,
  };
  const lagMs = Math.max(0, nowMs - Math.min(...records.map((r) => r.arrivedAt)));
  const durationMs = Math.round((performance.now() / 1000 - started) * 1000);
  for (const line of emfLines(runtime.settings, nowMs, totals, lagMs, durationMs, byType)) {
    runtime.emit(asciiJson(line));
  }
  log(runtime, 'INFO', 'batch processed', {
    ...totals,
    shards: [...byShard.keys()].sort(compareCodePoints),
    firstSequenceNumber: records[0].sequenceNumber,
    lastSequenceNumber: records[records.length - 1].sequenceNumber,
    ingestLagMs: lagMs,
    durationMs,
  });
}

/** Kinesis sequence numbers are decimal strings of varying length: compare them as numbers. */
function compareSequences(a, b) {
  const digitsA = /^[0-9]+$/.test(a);
  const digitsB = /^[0-9]+$/.test(b);
  if (digitsA !== digitsB) return digitsA ? 1 : -1;
  if (digitsA) {
    const [x, y] = [BigInt(a), BigInt(b)];
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  return compareCodePoints(a, b);
}

let cachedRuntime = null;

/**
 * Lambda entry point (`index.handler`).
 * @param {object} event
 * @param {object} context
 */
async function handler(event, context) {
  if (cachedRuntime === null) cachedRuntime = runtimeFromEnv();
  return processBatch(event, context, cachedRuntime);
}

module.exports = {
  handler,
  processBatch,
  createRuntime,
  runtimeFromEnv,
  settingsFromEnv,
  parseJson,
  resolveTimestamp,
  parseIsoMillis,
  numberText,
  anomalyReason,
  pyFloatRepr,
  formatG,
  BatchFailed,
  BACKOFF_CAP_S,
  MAX_WRITE_ATTEMPTS,
  POOL_SIZE,
};
