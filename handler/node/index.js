'use strict';
/**
 * iotpipe processor, Node twin of handler/python/index.py: a Kinesis batch -> S3 raw archive, DynamoDB
 * readings, S3 quarantine, EMF metrics. Both implement docs/contract.md (handler/vectors/*.json run against
 * both); CommonJS, one file, only the AWS SDK v3 clients the Lambda Node.js runtime ships.
 *
 * Per batch: archive every raw record, then take the records in windows of at most WINDOW_READINGS readings:
 * validate them, write their readings with BatchWriteItem (25 per call, concurrently, retried until the
 * deadline) and their rejections to one quarantine object. A window with a failure ends the batch: the records
 * from its lowest failure on are reported in batchItemFailures, and metrics count only the records before it.
 */
const zlib = require('node:zlib');
const { performance } = require('node:perf_hooks');
const { S3Client, PutObjectCommand } = require('@aws-sdk/client-s3');
const { DynamoDBClient, BatchWriteItemCommand, BatchGetItemCommand } = require('@aws-sdk/client-dynamodb');
// The Lambda Node runtimes ship the AWS SDK v3, SNS client included.
const { SNSClient, PublishCommand } = require('@aws-sdk/client-sns');

const MIN_TIMESTAMP_MS = 946_684_800_000; // 2000-01-01T00:00:00Z: anything earlier is a clock that was never set
const MAX_FUTURE_MS = 86_400_000; // a reading more than a day ahead of its arrival has a wrong clock
const MAX_ARRIVAL_MS = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
const DAY_MS = 86_400_000;
const BATCH_WRITE_LIMIT = 25;
const MAX_WRITE_ATTEMPTS = 100; // a bound on the loop; the deadline normally ends retrying first
const BACKOFF_BASE_S = 0.025;
const BACKOFF_CAP_S = 2.0;
const POOL_SIZE = 16;
const DEFAULT_BUDGET_MS = 60_000;
const RESERVE_MAX_MS = 2_000; // time kept back from the Lambda timeout to answer with a partial-batch response
const RESERVE_MIN_MS = 200;
const WINDOW_READINGS = 4_000; // readings held in memory at once (with MAX_READINGS_PER_MESSAGE, the memory bound)
const MAX_READINGS_PER_RECORD = 100; // members of one `readings` object
const MAX_READINGS_PER_MESSAGE = 1_000; // readings of all the samples of one message (the samples form)
const MAX_JSON_DEPTH = 64;
const STORAGE_LAYOUTS = ['item-per-reading', 'packed'];
const MAX_PACK_WINDOW_SECONDS = 3_600;
// A packed item's `readings` text stops growing here; with the other attributes (under 1 KB) the item stays
// below DynamoDB's 400 KB item limit. The next readings of the window go to the next part.
const MAX_PACKED_READINGS_BYTES = 393_216;
const MAX_SENSOR_TYPE_DIMENSIONS = 20;
const OTHER_SENSOR_TYPES = '_other'; // not a valid sensor type (those start with a letter), so it cannot collide
const DEVICE_ID_PATTERN = /^[A-Za-z0-9:_-]{1,128}$/; // an IoT thing name
const SENSOR_TYPE_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const DEVICE_TIMESTAMP_PATTERN = /^[\x20-\x7e]{1,64}$/;
const UNIT_MAX_CHARS = 32;
const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const RFC3339_PATTERN = new RegExp('^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})'
  + '(?:\\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})$');
const JSON_STRING = /"[^"\\]*(?:\\[\s\S][^"\\]*)*"/g;
const NOT_BRACKETS = /[^[\]{}]+/g;
const JSON_TOKEN = /"[^"\\]*(?:\\[\s\S][^"\\]*)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?/g;
// DynamoDB numbers: magnitude in [1e-130, 1e126); a value outside would fail the whole BatchWriteItem call.
const DEFAULT_EPISODE_QUIET_S = 3_600; // an anomaly this long after its series' previous one starts a new episode
const MAX_EPISODE_QUIET_S = 604_800;
const NUMBER_MIN_MAGNITUDE = 1e-130;
const NUMBER_MAX_MAGNITUDE = 1e126;
const RETRYABLE_ERRORS = new Set([
  'ProvisionedThroughputExceededException', 'ThrottlingException', 'RequestLimitExceeded',
  'InternalServerError', 'ServiceUnavailable', 'LimitExceededException', 'SlowDown', 'RequestTimeout',
]);

/** Nothing of the batch could be done; throwing makes Lambda retry (and bisect) the whole batch. */
class BatchFailed extends Error {
  constructor(message) {
    super(message);
    this.name = 'BatchFailed';
  }
}

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
/** An own property (never one inherited from Object.prototype: `constructor`, `__proto__`). */
const own = (object, key) => (Object.hasOwn(object, key) ? object[key] : undefined);
const isAbsent = (value) => value === undefined || value === null;
/** A finite JSON number (`true` is not a number). */
const isNumber = (value) => typeof value === 'number' && Number.isFinite(value);

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
  if (!/^[0-9]{1,5}$/.test(ttlText) || Number(ttlText) < 1) {
    throw new Error(`TTL_DAYS must be a whole number of days from 1 to 99999, not '${ttlText}'`);
  }
  const layout = env.STORAGE_LAYOUT || 'item-per-reading';
  if (!STORAGE_LAYOUTS.includes(layout)) {
    throw new Error(`STORAGE_LAYOUT must be 'item-per-reading' or 'packed', not '${layout}'`);
  }
  const windowText = String(env.PACK_WINDOW_SECONDS || '60').trim();
  if (!/^[0-9]{1,4}$/.test(windowText) || Number(windowText) < 1 || Number(windowText) > MAX_PACK_WINDOW_SECONDS) {
    throw new Error('PACK_WINDOW_SECONDS must be a whole number of seconds from 1 to '
      + `${MAX_PACK_WINDOW_SECONDS}, not '${windowText}'`);
  }
  return Object.freeze({
    table: env.DYNAMODB_TABLE,
    bucket: env.S3_BUCKET,
    environment: env.ENVIRONMENT || 'dev',
    thresholds: parseThresholds(env.THRESHOLDS || '{}'),
    unknownSensor,
    ttlDays: Number(ttlText),
    namespace: env.METRIC_NAMESPACE || 'IoT/Manufacturing',
    layout,
    packWindowMs: Number(windowText) * 1000,
    topicArn: env.ALARM_TOPIC_ARN || '', // where an anomaly episode's start is notified (empty: nowhere)
  });
}

/** A THRESHOLDS entry's `episodeQuiet` (seconds, default 3600) in ms; throws outside the contract. */
function episodeQuietOf(spec) {
  const given = own(spec, 'episodeQuiet');
  const quiet = given === undefined ? DEFAULT_EPISODE_QUIET_S : given;
  if (typeof quiet !== 'number' || !Number.isInteger(quiet) || quiet < 0 || quiet > MAX_EPISODE_QUIET_S) {
    throw new Error(`episodeQuiet ${JSON.stringify(quiet)} is not a whole number of seconds from 0 to `
      + `${MAX_EPISODE_QUIET_S}`);
  }
  return quiet * 1000;
}

function parseThresholds(text) {
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
      thresholds.set(name, Object.freeze({
        min: bound(own(spec, 'min')), max: bound(own(spec, 'max')), unit: String(own(spec, 'unit') || ''),
        detector: detectorOf(spec), episodeQuietMs: episodeQuietOf(spec),
      }));
    }
    return thresholds;
  } catch (err) {
    throw new Error('THRESHOLDS must be a JSON object sensorType -> {min, max, unit, detector?, sensitivity?, '
      + `probation?, episodeQuiet?}: ${err.message}`);
  }
}

/**
 * Everything the processor talks to; tests and the benchmark build their own.
 * @param {object} options settings, s3, dynamodb (SDK v3 clients), sns (one when settings.topicArn is set), and
 *   optionally emit(line), sleep(seconds),
 *   clockMs(), monotonic() (seconds), random(), poolSize
 */
function createRuntime(options) {
  return {
    emit: (line) => process.stdout.write(`${line}\n`),
    sleep: (seconds) => new Promise((resolve) => { setTimeout(resolve, seconds * 1000); }),
    clockMs: () => Date.now(),
    monotonic: () => performance.now() / 1000,
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
  // One attempt per SDK call (maxAttempts counts the first, as botocore's total_max_attempts does): the
  // processor's own loop retries until its deadline, the same in both twins.
  const config = { maxAttempts: 1, requestHandler: { connectionTimeout: 2_000, requestTimeout: 5_000 } };
  const settings = settingsFromEnv(env);
  return createRuntime({
    settings,
    sns: settings.topicArn ? new SNSClient(config) : null,
    // A custom endpoint (moto, LocalStack) has no per-bucket DNS names.
    s3: new S3Client({ ...config, forcePathStyle: Boolean(env.AWS_ENDPOINT_URL) }),
    dynamodb: new DynamoDBClient(config),
  });
}

// ---------------------------------------------------------------- decoding and validation (pure)

const text = (value) => (typeof value === 'string' ? value : '');

/** approximateArrivalTimestamp (seconds) in ms, rounded half up; nowMs if absent or absurd. */
function arrivalMs(value, nowMs) {
  if (!isNumber(value) || !(value * 1000 >= 0 && value * 1000 <= MAX_ARRIVAL_MS)) return nowMs;
  return Math.floor(value * 1000 + 0.5);
}

/**
 * A Kinesis event record as { shardId, sequenceNumber, partitionKey, arrivedAt, raw (Buffer|null), data };
 * a malformed one has empty fields.
 */
function decodeRecord(given, nowMs) {
  const eventRecord = isObject(given) ? given : {};
  const kinesis = isObject(own(eventRecord, 'kinesis')) ? eventRecord.kinesis : {};
  const data = text(own(kinesis, 'data'));
  return Object.freeze({
    shardId: text(own(eventRecord, 'eventID')).split(':', 1)[0] || 'shardId-unknown',
    sequenceNumber: text(own(kinesis, 'sequenceNumber')),
    partitionKey: text(own(kinesis, 'partitionKey')),
    arrivedAt: arrivalMs(own(kinesis, 'approximateArrivalTimestamp'), nowMs),
    raw: BASE64_PATTERN.test(data) ? Buffer.from(data, 'base64') : null,
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
 * The deepest nesting of arrays and objects in `source`, brackets inside strings not counted; a text with at most
 * MAX_JSON_DEPTH opening brackets answers MAX_JSON_DEPTH without scanning (it cannot be deeper).
 */
function jsonDepth(source) {
  let brackets = 0;
  for (let i = 0; i < source.length && brackets <= MAX_JSON_DEPTH; i += 1) {
    const c = source.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) brackets += 1;
  }
  if (brackets <= MAX_JSON_DEPTH) return MAX_JSON_DEPTH; // cannot be deeper: the usual payload skips the scan
  let depth = 0;
  let deepest = 0;
  for (const bracket of source.replace(JSON_STRING, '').replace(NOT_BRACKETS, '')) {
    if (bracket === '[' || bracket === '{') {
      depth += 1;
      deepest = Math.max(deepest, depth);
    } else {
      depth -= 1;
    }
  }
  return deepest;
}

/** A non-zero number literal too small for a double reads as out of range (±Infinity), not as 0. */
function underflowsToZero(token) {
  return token[0] !== '"' && Number(token) === 0 && /[1-9]/.test(token.split(/[eE]/, 1)[0]);
}

/**
 * RFC 8259 JSON, every number a double; throws SyntaxError. Literals that underflow to 0 become ±1e400
 * (Infinity), so `1e-400` is out of range rather than stored as 0.
 * @param {string} source
 */
function parseJson(source) {
  const tokens = /[eE]-|0{300}/.test(source) ? source.match(JSON_TOKEN) || [] : [];
  if (!tokens.some(underflowsToZero)) return JSON.parse(source);
  return JSON.parse(source.replace(JSON_TOKEN, (token) => {
    if (!underflowsToZero(token)) return token;
    return token.startsWith('-') ? '-1e400' : '1e400';
  }));
}

/**
 * Validate one record against the data contract and build its DynamoDB items.
 * @returns {{record, readings: object[], rejections: object[], recordRejected: boolean, timestampReplaced: boolean}}
 */
function interpret(record, settings) {
  const reject = (reason) => ({
    record, readings: [], rejections: [{ reason, sensorType: null }], recordRejected: true, timestampReplaced: false,
  });
  if (record.raw === null) return reject('data is not base64');
  const source = utf8Text(record.raw);
  if (source === null) return reject('data is not UTF-8');
  if (jsonDepth(source) > MAX_JSON_DEPTH) return reject('data is nested too deeply');
  let payload;
  try {
    payload = parseJson(source);
  } catch {
    return reject('data is not JSON');
  }
  if (!isObject(payload)) return reject('payload is not a JSON object');
  const device = own(payload, 'deviceId');
  if (isAbsent(device) || device === '') return reject('missing deviceId');
  if (typeof device !== 'string' || !DEVICE_ID_PATTERN.test(device)) return reject('invalid deviceId');
  const topicDevice = own(payload, 'topicDeviceId');
  if (!isAbsent(topicDevice) && topicDevice !== device) return reject('deviceId differs from topic');
  const receivedAt = plausibleReceivedAt(own(payload, 'receivedAt'), record.arrivedAt);
  const retentionMs = settings.ttlDays * DAY_MS;
  let bodies = [payload];
  if (Object.hasOwn(payload, 'samples')) {
    const samples = payload.samples;
    if (!Array.isArray(samples) || samples.length === 0) return reject('samples is not a non-empty array');
    if (samples.reduce((sum, sample) => sum + sampleSize(sample), 0) > MAX_READINGS_PER_MESSAGE) {
      return reject('too many readings');
    }
    bodies = samples;
  }

  const readings = [];
  const rejections = [];
  let anyReplaced = false;
  let sample = Object.hasOwn(payload, 'samples') ? 0 : -1; // a sample's position counts from 1, the payload is 0
  for (const body of bodies) {
    sample += 1;
    if (!isObject(body)) {
      rejections.push({ reason: 'sample is not a JSON object', sensorType: null });
      continue;
    }
    const pairs = readingsOf(body);
    if (typeof pairs === 'string') {
      if (body === payload) return reject(pairs);
      rejections.push({ reason: pairs, sensorType: null });
      continue;
    }
    const [timestamp, replaced] = resolveTimestamp(own(body, 'timestamp'), receivedAt, retentionMs);
    anyReplaced = anyReplaced || replaced;
    const unit = Object.hasOwn(body, 'readings') ? null : own(body, 'unit');
    // A reading dated by its arrival shares that time with every reading of its record: its origin, not its
    // time, tells it apart (a retry writes the same key again; two samples alike never collapse).
    const byArrival = replaced || isAbsent(own(body, 'timestamp'));
    const stamp = {
      device, timestamp, receivedAt, unit: unit || null,
      deviceTimestamp: replaced ? deviceTimestamp(own(body, 'timestamp')) : null,
      origin: byArrival ? `#${record.shardId}#${record.sequenceNumber}#${sample}` : '',
    };
    for (const [sensorType, value] of pairs) {
      const outcome = buildReading(record, settings, stamp, sensorType, value);
      (outcome.item ? readings : rejections).push(outcome);
    }
  }
  return { record, readings, rejections, recordRejected: false, timestampReplaced: anyReplaced };
}

/** How many readings a sample holds (a non-object or malformed sample counts as one). */
function sampleSize(sample) {
  const readings = isObject(sample) ? own(sample, 'readings') : undefined;
  return isObject(readings) && Object.keys(readings).length > 0 ? Object.keys(readings).length : 1;
}

/**
 * The [sensorType, value] pairs of a message or sample, single or multi form, or why it has none: the checks of
 * the multi form (`readings`) or of the single form (`sensorType`, `unit`).
 */
function readingsOf(body) {
  if (Object.hasOwn(body, 'readings')) {
    const readings = body.readings;
    if (!isObject(readings) || Object.keys(readings).length === 0) return 'readings is not a non-empty object';
    if (Object.keys(readings).length > MAX_READINGS_PER_RECORD) return 'too many readings';
    return Object.entries(readings);
  }
  const sensorType = own(body, 'sensorType');
  if (isAbsent(sensorType) || sensorType === '') return 'missing sensorType';
  const unit = own(body, 'unit');
  if (!isAbsent(unit) && !validUnit(unit)) return 'invalid unit';
  return [[sensorType, own(body, 'value')]];
}

/** A unit is a string of at most 32 code points without lone surrogates (DynamoDB rejects those). */
function validUnit(unit) {
  return typeof unit === 'string' && [...unit].length <= UNIT_MAX_CHARS && !/\p{Surrogate}/u.test(unit);
}

/**
 * The rule's receivedAt in epoch ms, or the Kinesis arrival time when it is missing or implausible (before 2000
 * or more than a day after arrival).
 */
function plausibleReceivedAt(value, arrivedAt) {
  if (!isNumber(value)) return arrivedAt;
  const millis = Math.floor(value);
  return millis >= MIN_TIMESTAMP_MS && millis <= arrivedAt + MAX_FUTURE_MS ? millis : arrivedAt;
}

/**
 * The reading time in epoch ms and whether receivedAt replaced a given but implausible one: not an RFC 3339
 * text or finite number, before 2000, older than the retention or more than a day ahead.
 * @returns {[number, boolean]}
 */
function resolveTimestamp(value, receivedAt, retentionMs) {
  let millis = null;
  if (typeof value === 'string') millis = parseRfc3339(value);
  else if (isNumber(value)) millis = Math.floor(value);
  const earliest = Math.max(MIN_TIMESTAMP_MS, receivedAt - retentionMs);
  if (millis === null || !(millis >= earliest && millis <= receivedAt + MAX_FUTURE_MS)) {
    return [receivedAt, !isAbsent(value)];
  }
  return [millis, false];
}

/** A replaced timestamp as the item keeps it (deviceTimestamp): printable ASCII up to 64 characters, a number. */
function deviceTimestamp(value) {
  if (typeof value === 'string') return DEVICE_TIMESTAMP_PATTERN.test(value) ? value : null;
  return isNumber(value) ? formatNumber(value) : null;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
function daysFromCivil(year, month, day) {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  return era * 146_097 + yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear - 719_468;
}

function daysInMonth(year, month) {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
}

/**
 * `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as epoch ms (fraction truncated to ms), else null.
 * @param {string} value
 */
function parseRfc3339(value) {
  const match = RFC3339_PATTERN.exec(value);
  if (!match) return null;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const fraction = match[7] || '';
  const offset = match[8];
  if (!(month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month) && hour <= 23 && minute <= 59
    && second <= 59)) return null;
  let offsetMinutes = 0;
  if (offset !== 'Z' && offset !== 'z') {
    const [offsetHours, offsetRest] = [Number(offset.slice(1, 3)), Number(offset.slice(4, 6))];
    if (offsetHours > 23 || offsetRest > 59) return null;
    offsetMinutes = (offsetHours * 60 + offsetRest) * (offset[0] === '-' ? -1 : 1);
  }
  const seconds = daysFromCivil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
  return (seconds - offsetMinutes * 60) * 1000 + Number(`${fraction}00`.slice(0, 3));
}

/**
 * The contract's number text: ECMAScript's Number::toString of the double; zero is `0`.
 * @param {number} number
 */
function formatNumber(number) {
  return number === 0 ? '0' : String(number);
}

/**
 * A reading's value as DynamoDB number text and Number, or the quarantine reason (a string).
 * @returns {[string, number]|string}
 */
function numberValue(value) {
  if (isAbsent(value)) return 'missing value';
  if (typeof value !== 'number') return 'value is not a number';
  if (!Number.isFinite(value)
    || (value !== 0 && !(Math.abs(value) >= NUMBER_MIN_MAGNITUDE && Math.abs(value) < NUMBER_MAX_MAGNITUDE))) {
    return 'value out of range';
  }
  return [formatNumber(value), value];
}

/**
 * `above max <max>` / `below min <min>` when the value crosses a bound, else null.
 * @param {number} value
 * @param {{min: number|null, max: number|null}} threshold
 */
function anomalyReason(value, threshold) {
  if (threshold.max !== null && value > threshold.max) return `above max ${formatNumber(threshold.max)}`;
  if (threshold.min !== null && value < threshold.min) return `below min ${formatNumber(threshold.min)}`;
  return null;
}

function buildReading(record, settings, stamp, sensorType, value) {
  if (typeof sensorType !== 'string' || !SENSOR_TYPE_PATTERN.test(sensorType)) {
    return { reason: 'invalid sensorType', sensorType: null };
  }
  const number = numberValue(value);
  if (typeof number === 'string') return { reason: number, sensorType };
  const [valueText, asNumber] = number;
  const threshold = settings.thresholds.get(sensorType) || null;
  if (threshold === null && settings.unknownSensor === 'quarantine') {
    return { reason: 'unknown sensorType', sensorType };
  }
  const reason = threshold ? anomalyReason(asNumber, threshold) : null;
  const status = threshold === null ? 'UNCHECKED' : (reason ? 'ANOMALY' : 'NORMAL');
  const unit = stamp.unit || (threshold ? threshold.unit : '') || '';
  const { device, timestamp } = stamp;
  const padded = String(timestamp).padStart(13, '0');
  // The value is part of the key: an identical repeat collapses onto one item, a different value at the
  // same millisecond is another item, so no write can ever replace a stored reading by another value.
  const sortKey = `${padded}#${sensorType}#${valueText}${stamp.origin}`;
  const expires = Math.floor(Math.max(timestamp, record.arrivedAt) / 1000) + settings.ttlDays * 86_400;
  const item = {
    deviceId: { S: device },
    sk: { S: sortKey },
    timestamp: { N: String(timestamp) },
    sensorType: { S: sensorType },
    value: { N: valueText },
    status: { S: status },
    anomalyDetected: { BOOL: reason !== null },
    receivedAt: { N: String(stamp.receivedAt) },
    ttl: { N: String(expires) },
    shardId: { S: record.shardId },
    sequenceNumber: { S: record.sequenceNumber },
  };
  if (unit) item.unit = { S: unit };
  if (stamp.deviceTimestamp !== null) item.deviceTimestamp = { S: stamp.deviceTimestamp };
  if (reason) Object.assign(item, anomalyFields(item, reason, 'bound'));
  return { record, key: `${device}\u0000${sortKey}`, sensorType, anomaly: reason !== null, item };
}

/**
 * What an anomaly item adds: `reason`, the `rule` that fired (`bound` or `model`), and the keys of the anomaly
 * index (`anomalyDay`, `anomalySk`).
 */
function anomalyFields(item, reason, rule) {
  const timestamp = Number(item.timestamp.N);
  return {
    status: { S: 'ANOMALY' },
    anomalyDetected: { BOOL: true },
    reason: { S: reason },
    rule: { S: rule },
    anomalyDay: { S: new Date(timestamp).toISOString().slice(0, 10) },
    anomalySk: { S: `${String(timestamp).padStart(13, '0')}#${item.deviceId.S}#${item.sensorType.S}` },
  };
}

/**
 * Readings with distinct keys (first wins) and the number of repeats dropped: one BatchWriteItem call rejects
 * duplicate keys, and a same-key reading is the same value (the value is in the key).
 */
function deduplicate(readings) {
  const kept = new Map();
  for (const reading of readings) if (!kept.has(reading.key)) kept.set(reading.key, reading);
  return { readings: [...kept.values()], repeats: readings.length - kept.size };
}

/**
 * The items a window writes for its (deduplicated) readings: one per reading, or in the packed layout one per
 * reading only for anomalies and replaced timestamps and packed items for all the others.
 */
function windowItems(readings, settings) {
  if (settings.layout !== 'packed') return readings.map((r) => r.item);
  const alone = (r) => r.anomaly || 'deviceTimestamp' in r.item;
  return [...readings.filter(alone).map((r) => r.item),
    ...packItems(readings.filter((r) => !alone(r)), settings.packWindowMs)];
}

/**
 * Packed items: the readings of one device, sensor type and unit in one time window (epoch-aligned, windowMs
 * long), keyed `<13-digit window start>#<sensorType>#packed#<shardId>#<first sequence number>#<part>`. The key is a
 * function of the window and its first record, so a retried batch overwrites its own items and a later batch
 * with readings of the same window adds an item beside them. `readings` is `<ms after the window
 * start>:<value>` pairs joined by `,` in time order; a window whose text would pass maxBytes continues in the
 * next part. Besides the key: sensorType, unit, status, readings, ttl (the largest of its readings') and shardId.
 */
function packItems(readings, windowMs, maxBytes = MAX_PACKED_READINGS_BYTES) {
  const groups = new Map();
  for (const reading of readings) {
    const { item } = reading;
    const timestamp = Number(item.timestamp.N);
    const unit = item.unit ? item.unit.S : '';
    const start = timestamp - (timestamp % windowMs);
    const key = JSON.stringify([item.deviceId.S, reading.sensorType, unit, start]);
    if (!groups.has(key)) groups.set(key, { device: item.deviceId.S, sensorType: reading.sensorType, unit, start, group: [] });
    groups.get(key).group.push(reading);
  }
  const items = [];
  const partsTaken = new Map();
  for (const { device, sensorType, unit, start, group } of groups.values()) {
    const first = group[0].item;
    // Sequence numbers are unique within a shard only (they restart in the children of a reshard on moto):
    // the shard is part of the key, or two shards' items of one window could overwrite each other.
    const prefix = `${String(start).padStart(13, '0')}#${sensorType}#packed#${first.shardId.S}`
      + `#${first.sequenceNumber.S}`;
    const ordered = [...group].sort((a, b) => Number(a.item.timestamp.N) - Number(b.item.timestamp.N));
    for (const part of splitByBytes(ordered, start, maxBytes)) {
      const taken = `${device}\u0000${prefix}`;
      const number = partsTaken.get(taken) || 0;
      partsTaken.set(taken, number + 1);
      // DynamoDB bills every byte of attribute names and values: the window start and first record are in
      // the key, so a minute of 1 Hz readings stays within one write unit (1 KB).
      const packed = {
        deviceId: { S: device },
        sk: { S: `${prefix}#${number}` },
        sensorType: { S: sensorType },
        status: { S: first.status.S },
        readings: { S: part.map(([entry]) => entry).join(',') },
        ttl: { N: String(part.reduce((most, [, r]) => Math.max(most, Number(r.item.ttl.N)), 0)) },
        shardId: { S: first.shardId.S },
      };
      if (unit) packed.unit = { S: unit };
      items.push(packed);
    }
  }
  return items;
}

/**
 * The record an item's failure cuts the batch at: a reading's own, a packed item's first record's (in its key
 * `<start>#<sensorType>#packed#<shardId>#<sequence number>#<part>`, after its shardId; a malformed event's shard
 * and sequence number may hold `#`).
 */
function firstSequenceNumber(item) {
  if (item.sequenceNumber) return item.sequenceNumber.S;
  const key = item.sk.S;
  const prefix = `${key.slice(0, 13)}#${item.sensorType.S}#packed#${item.shardId.S}#`;
  return key.slice(prefix.length, key.lastIndexOf('#'));
}

/** `offset:value` entries in parts whose joined text stays within maxBytes (ASCII: bytes = chars). */
function splitByBytes(ordered, start, maxBytes) {
  const parts = [[]];
  let size = -1; // the first entry of a part has no separator
  for (const reading of ordered) {
    const entry = `${Number(reading.item.timestamp.N) - start}:${reading.item.value.N}`;
    if (parts[parts.length - 1].length && size + 1 + entry.length > maxBytes) {
      parts.push([]);
      size = -1;
    }
    parts[parts.length - 1].push([entry, reading]);
    size += 1 + entry.length;
  }
  return parts;
}

// ---------------------------------------------------------------- adaptive detection (pure; docs/contract.md 12)

/** How one series' detector learns and scores (docs/contract.md 12); the defaults (the `onset` preset) were chosen
 * on the NAB development data. */
const DETECTOR_DEFAULTS = Object.freeze({
  probation: 150, // readings learned before a score other than 0
  longAlpha: 0.002, // weight of a reading in the baseline mean and variance
  shortAlpha: 0.2, // weight of a reading in the short mean (level-shift detection)
  zScale: 0.54, // the (novel) deviation scored 0.5, in the series' tail (or in spreads without one)
  clipZ: 10.0, // a reading moves the baseline by at most this many standard deviations
  relearn: 60, // consecutive readings of a shifted short mean before the baseline moves to it
  shiftZ: 2.0, // the short mean's deviation, in its own standard deviations, that counts as shifted
  gapIntervals: 20.0, // a gap longer than this many usual intervals restarts the short mean
  peakDecay: 0.995, // per reading, of the recent peak deviation a new deviation must exceed
  novelty: 1.0, // 1: score the excess over the recent peak (one alarm per event); 0: every deviation
  flatMin: 10, // readings repeating the last value exactly before a flat line can score; 0: no flat rule
  flatFactor: 2.0, // a flat line scores once it is this many times the longest run the series has had
  tailDown: 99, // readings at or below the tail before it steps down (its 99th percentile); 0: no tail
});
// onset: one alarm at an event's start (NAB); sustained: every reading while the deviation lasts (SKAB's point task)
const DETECTOR_PRESETS = Object.freeze({
  onset: DETECTOR_DEFAULTS,
  sustained: Object.freeze({
    ...DETECTOR_DEFAULTS, probation: 400, longAlpha: 0.0005, zScale: 5.5, clipZ: 4.0, relearn: 3600, shiftZ: 5.5,
    novelty: 0.0, tailDown: 0,
  }),
});
const DEFAULT_SENSITIVITY = 0.5; // a score at or above it is an anomaly (chosen on the development data)
const SPREAD_FLOOR_RELATIVE = 1e-3; // a flat series still has a spread: 0.1 % of its level
const SPREAD_FLOOR_ABSOLUTE = 1e-9;
const INTERVAL_ALPHA = 0.1;
const PEAK_STEPS = 64.0;
const TAIL_STEP = 1.0 / 64.0; // how far one reading moves the tail
const TAIL_STEP_YOUNG = 1.0 / 8.0; // during probation, so that a young series has learned its tail when it scores
const TAIL_START = 3.0; // about the tail of Gaussian noise, where a series starts before it has shown its own
const STORED_DIGITS_MAX = 13; // a state number whose text is longer is stored as the base64url of its bits
const STORED_BITS = /^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$/;

/** A series' state before its first reading. */
const emptyDetectorState = () => ({
  count: 0, newestMs: 0, mean: 0, variance: 0, short: 0, interval: 0, shifted: 0, peak: 0, last: 0, run: 0, longest: 0,
  tail: 0, below: 0,
});

/** The state's numbers in the order of its stored array (docs/contract.md 12). */
const detectorStateToList = (s) => [s.count, s.newestMs, s.mean, s.variance, s.short, s.interval, s.shifted, s.peak,
  s.last, s.run, s.longest, s.tail, s.below];

/** The double of a stored state's base64url string. */
function storedDouble(text) {
  if (!STORED_BITS.test(text)) throw new Error(`${JSON.stringify(text)} is not the 11 base64url characters of a double`);
  return Buffer.from(text, 'base64url').readDoubleBE(0);
}

/** One number of a stored state: section 4's text, or, when that is longer than 13 characters, the JSON string
 * of the base64url (no padding) of its IEEE 754 big-endian bits, which is shorter and exact. */
function storedNumber(number) {
  const text = formatNumber(number);
  if (text.length <= STORED_DIGITS_MAX) return text;
  const bits = Buffer.alloc(8);
  bits.writeDoubleBE(number, 0);
  return `"${bits.toString('base64url')}"`;
}

/** The state from its stored array (a long double as its base64url bits); a state of an earlier release gains what
 * it lacks: 8 numbers the last value at the mean and no runs, 11 the recent peak as its tail (the start's while it
 * has none). */
function detectorStateFromList(values) {
  let all = values.map((v) => {
    if (typeof v === 'string') return storedDouble(v);
    if (typeof v !== 'number') throw new Error(`a detector state holds ${JSON.stringify(v)}, not a number`);
    return v;
  });
  if (all.length === 8) all = [...all, all[2], 0, 0];
  if (all.length === 11) all = [...all, all[7] || TAIL_START, 0];
  if (all.length < 13) throw new Error(`a detector state of ${values.length} numbers (8, 11 or at least 13)`);
  // a later release may append numbers: the first 13 are this release's, so its state item still reads
  const [count, newestMs, mean, variance, short, interval, shifted, peak, last, run, longest, tail, below] = all;
  return { count, newestMs, mean, variance, short, interval, shifted, peak, last, run, longest, tail, below };
}

/** The tail and its count after a reading of deviation `z`: a step up when `z` passes it, a step down after
 * `tailDown` readings that did not (a frugal streaming quantile in 64ths); from a series' third reading. */
function tailLearned(state, z, scoring, params) {
  if (!params.tailDown || state.count < 2) return [state.tail, state.below];
  const step = scoring ? TAIL_STEP : TAIL_STEP_YOUNG;
  if (z > state.tail) return [state.tail + step, state.below];
  if (state.below + 1 >= params.tailDown) return [Math.max(0, state.tail - step), 0];
  return [state.tail, state.below + 1];
}

/**
 * Score `value` against `state` (before learning it); returns `[scored, learnedState]`.
 * @returns {[{score: number, expected: number, spread: number, learned: boolean, width: number}, object]}
 */
function detectStep(state, timestampMs, value, params = DETECTOR_DEFAULTS) {
  if (state.count === 0) {
    const first = { count: 1, newestMs: timestampMs, mean: value, variance: 0, short: value, interval: 0,
      shifted: 0, peak: 0, last: value, run: 0, longest: 0, tail: TAIL_START, below: 0 };
    return [{ score: 0, expected: value, spread: 0, learned: true, width: 0 }, first];
  }
  const late = timestampMs < state.newestMs;
  const elapsed = timestampMs - state.newestMs;
  const gap = state.interval > 0 && elapsed > params.gapIntervals * state.interval;
  const short = gap ? value : state.short + params.shortAlpha * (value - state.short);
  const spread = Math.max(Math.sqrt(state.variance), SPREAD_FLOOR_RELATIVE * Math.abs(state.mean),
    SPREAD_FLOOR_ABSOLUTE);
  const zPoint = Math.abs(value - state.mean) / spread;
  const zShift = Math.abs(short - state.mean) / (spread * Math.sqrt(params.shortAlpha / (2.0 - params.shortAlpha)));
  const z = Math.max(zPoint, zShift);
  // in units of the series' own tail: an excess of a few spreads is common in a heavy-tailed series and rare in a
  // Gaussian one, and one threshold then means the same rarity on both
  const tail = params.tailDown ? Math.max(1.0, state.tail) : 1.0;
  const novel = Math.max(0, z - params.novelty * state.peak) / tail;
  const width = params.zScale * tail * spread;
  const scoring = state.count >= params.probation;
  let score = scoring ? (novel * novel) / (novel * novel + params.zScale * params.zScale) : 0;
  const run = value === state.last ? state.run + 1 : 0;
  // a stuck sensor: a run of one repeated value longer than any the series has had (once at its onset for
  // novelty 1, every reading of it for 0)
  const bound = Math.max(params.flatMin, params.flatFactor * state.longest);
  if (scoring && params.flatMin > 0 && run > bound && (params.novelty === 0 || state.run <= bound)) score = 1;
  if (late) return [{ score, expected: state.mean, spread, learned: false, width }, state];
  const alpha = Math.max(params.longAlpha, 1.0 / (state.count + 1));
  const limit = params.clipZ * spread;
  let deviation = value - state.mean;
  if (scoring) deviation = Math.max(-limit, Math.min(limit, deviation));
  let mean = state.mean + alpha * deviation;
  const variance = (1.0 - alpha) * (state.variance + alpha * deviation * deviation);
  let shifted = scoring && zShift > params.shiftZ ? state.shifted + 1 : 0;
  if (shifted >= params.relearn) [mean, shifted] = [short, 0];
  let interval;
  if (gap) interval = state.interval;
  else if (state.count === 1) interval = elapsed;
  // whole milliseconds, and the peak in 64ths (both exact in any double arithmetic): the digits they drop keep a
  // device's state item of three series within one 1 KB write unit
  else interval = Math.floor(state.interval + INTERVAL_ALPHA * (elapsed - state.interval));
  // the recent peak is learned over probation's second half too: the first deviations after probation are
  // judged against the noise the series has shown, not against 0 (which alarmed on ordinary noise)
  const tracking = scoring || 2 * state.count >= params.probation;
  const peak = tracking ? Math.floor(Math.max(z, state.peak * params.peakDecay) * PEAK_STEPS + 0.5) / PEAK_STEPS : 0;
  const longest = run === 0 ? Math.max(state.longest, state.run) : state.longest;
  const [tailNext, below] = tailLearned(state, z, scoring, params);
  const learned = { count: state.count + 1, newestMs: timestampMs, mean, variance, short, interval, shifted, peak,
    last: value, run, longest, tail: tailNext, below };
  return [{ score, expected: state.mean, spread, learned: true, width }, learned];
}

/** Score a series' `[timestampMs, value]` points in the order given; returns `[scored[], lastState]`. */
function detectSeries(points, params = DETECTOR_DEFAULTS, state = emptyDetectorState()) {
  let current = state;
  const scored = [];
  for (const [timestampMs, value] of points) {
    const [result, next] = detectStep(current, timestampMs, value, params);
    scored.push(result);
    current = next;
  }
  return [scored, current];
}

/**
 * The detector of one THRESHOLDS entry (`detector`, `sensitivity`, `probation`): `{params, sensitivity}`, or null
 * when `detector` is absent or `off`. Throws on a value outside the contract.
 */
function detectorOf(spec) {
  const name = own(spec, 'detector');
  if (name === undefined || name === null || name === 'off') return null;
  if (typeof name !== 'string' || !Object.hasOwn(DETECTOR_PRESETS, name)) {
    throw new Error(`detector ${JSON.stringify(name)} is not 'onset', 'sustained' or 'off'`);
  }
  const givenSensitivity = own(spec, 'sensitivity');
  const sensitivity = givenSensitivity === undefined ? DEFAULT_SENSITIVITY : givenSensitivity;
  if (typeof sensitivity !== 'number' || !(sensitivity > 0 && sensitivity <= 1)) {
    throw new Error(`sensitivity ${JSON.stringify(sensitivity)} is not a number in (0, 1]`);
  }
  const givenProbation = own(spec, 'probation');
  const probation = givenProbation === undefined ? 0 : givenProbation;
  if (typeof probation !== 'number' || !Number.isInteger(probation) || probation < 0 || probation > 1_000_000) {
    throw new Error(`probation ${JSON.stringify(probation)} is not a whole number from 0 to 1000000`);
  }
  const preset = DETECTOR_PRESETS[name];
  return Object.freeze({ params: probation ? Object.freeze({ ...preset, probation }) : preset, sensitivity });
}

/** A model figure as a DynamoDB number: below its smallest magnitude it is 0, past its largest (or not finite)
 * there is none. */
function numberAttribute(number) {
  if (!Number.isFinite(number) || Math.abs(number) >= NUMBER_MAX_MAGNITUDE) return null;
  return { N: Math.abs(number) < NUMBER_MIN_MAGNITUDE ? '0' : formatNumber(number) };
}

/**
 * The reading as the detector leaves it: a bound anomaly gains the model's `score` and expected band
 * (`expectedLow`, `expectedHigh`); a score at or above the sensitivity makes a `model` anomaly.
 */
function judge(reading, scored, detector) {
  const model = scored.score >= detector.sensitivity;
  if (!reading.anomaly && !model) return reading;
  const low = scored.expected - scored.width;
  const high = scored.expected + scored.width;
  const item = { ...reading.item };
  if (!reading.anomaly) {
    Object.assign(item, anomalyFields(item, `expected ${formatNumber(low)} to ${formatNumber(high)}`, 'model'));
  }
  for (const [name, number] of [['score', scored.score], ['expectedLow', low], ['expectedHigh', high]]) {
    const attribute = numberAttribute(number);
    if (attribute !== null) item[name] = attribute;
  }
  return { ...reading, anomaly: true, item };
}

/**
 * Score each reading of a sensor type with a detector against its series' state (device, sensor type), in the
 * order given (the batch's, which Kinesis keeps per device), learning it into `states` (a Map) after; a reading
 * of a record at or below its device's `absorbed` sequence number (a Map) is scored but not learned again.
 */
function scoreReadings(readings, settings, states, absorbed = new Map()) {
  const detectors = detectorsOf(settings);
  return readings.map((reading) => {
    const detector = detectors.get(reading.sensorType);
    if (!detector) return reading;
    const device = reading.item.deviceId.S;
    const series = `${device}\u0000${reading.sensorType}`;
    const [scored, next] = detectStep(states.get(series) || emptyDetectorState(), Number(reading.item.timestamp.N),
      Number(reading.item.value.N), detector.params);
    const seen = absorbed.get(device) || '';
    if (!seen || compareSequences(reading.record.sequenceNumber, seen) > 0) states.set(series, next);
    return judge(reading, scored, detector);
  });
}

/** Each sensor type with a detector -> its detector (a Map). */
function detectorsOf(settings) {
  const detectors = new Map();
  for (const [name, threshold] of settings.thresholds) if (threshold.detector) detectors.set(name, threshold.detector);
  return detectors;
}

// ---------------------------------------------------------------- the detector's state between invocations

const STATE_SORT_KEY = '#detector'; // sorts before every reading's key, so `sk >= <13-digit ms>` never meets it
const BATCH_GET_LIMIT = 100;

/** States as stored: a JSON object sensor type -> state array, types in code point order, numbers in section
 * 4's format or, when that is long, as their bits (so both processors write the same bytes). `states` is a Map. */
function statesText(states) {
  const names = [...states.keys()].sort(compareCodePoints);
  const arrays = names.map((name) => stateArray(states.get(name)));
  const text = `{${names.map((name, i) => `${JSON.stringify(name)}:${arrays[i][0]}`).join(',')}}`;
  if (arrays.every(([, exact]) => exact)) KNOWN_STATES.remember(text, states);
  return text;
}

// A warm function formats the same states again: those a batch started from (its item's prevStatesV2) are the ones
// the batch before wrote, and a series without readings in a batch keeps its state. A state object is never
// changed (detectStep makes a new one), so the memo changes no byte.
const STATE_ARRAYS = new WeakMap();

/** A state's stored array, and whether it reads back as this very state (not so for -0, which is stored as 0, nor
 * for a number that is not finite). */
function stateArray(state) {
  let known = STATE_ARRAYS.get(state);
  if (known === undefined) {
    const numbers = detectorStateToList(state);
    known = [`[${numbers.map(storedNumber).join(',')}]`,
      numbers.every((v) => Number.isFinite(v) && !Object.is(v, -0))];
    STATE_ARRAYS.set(state, known);
  }
  return known;
}

/** States by the text they were written or read as, the oldest forgotten first past `maxChars` of text: the next
 * batch of a warm function reads the texts the last one wrote (statesV2) and read (prevStatesV2). */
class StatesMemo {
  constructor(maxChars) {
    this.maxChars = maxChars;
    this.chars = 0;
    this.states = new Map();
  }

  /** Keep `states` (a Map) as what `text` reads as (a text longer than a 64th of the bound is not kept). */
  remember(text, states) {
    if (this.states.has(text) || text.length > Math.floor(this.maxChars / 64)) return;
    this.states.set(text, new Map(states));
    this.chars += text.length;
    while (this.chars > this.maxChars) {
      const oldest = this.states.keys().next().value;
      this.states.delete(oldest);
      this.chars -= oldest.length;
    }
  }

  /** A copy of the states kept for `text` (a Map), or null. */
  recall(text) {
    const known = this.states.get(text);
    return known === undefined ? null : new Map(known);
  }
}

const KNOWN_STATES = new StatesMemo(1000000); // about 2,700 devices of 3 series

/** States from their stored text, parsed, as a Map. */
function readStates(text) {
  return new Map(Object.entries(parseJson(text || '{}')).map(([name, values]) => [name, detectorStateFromList(values)]));
}

/** States from their stored text, as a Map: those this function last wrote or read as that text, else parsed. */
function parseStates(text) {
  const known = KNOWN_STATES.recall(text);
  if (known !== null) return known;
  const states = readStates(text);
  KNOWN_STATES.remember(text, states);
  return states;
}

/** A device's state item as read (an absent item is the empty memory). */
function memoryOf(item) {
  const text = (name) => (item && item[name] && typeof item[name].S === 'string' ? item[name].S : '');
  // this release's states (13 numbers, long doubles as their bits) are statesV2, which the previous release does
  // not read; an item it wrote holds states (numbers only), which still read here
  const states = (name) => parseStates(item && item[`${name}V2`] ? text(`${name}V2`) : text(name));
  return { seq: text('seq'), states: states('states'), prevSeq: text('prevSeq'), prevStates: states('prevStates'),
    // With notifications on: each sensor type's newest anomaly (ms) after `seq`, while its episode may go on.
    episodes: parseEpisodes(text('episodes')) };
}

/** Episodes as stored: a JSON object sensor type -> newest anomaly (ms), types in code point order. */
function episodesText(episodes) {
  const names = [...episodes.keys()].sort(compareCodePoints);
  return `{${names.map((name) => `${JSON.stringify(name)}:${episodes.get(name)}`).join(',')}}`;
}

/** Episodes from their stored text, as a Map. */
function parseEpisodes(text) {
  return new Map(Object.entries(parseJson(text || '{}')).map(([name, ms]) => [name, Number(ms)]));
}

/**
 * Where a device's scoring starts in a batch whose first record of it is `firstSeq`: `[seq, states]` after the
 * stored `seq` normally; when that record was already absorbed (a retry of the batch that wrote the item), from
 * the snapshot that batch started from; a record older than that snapshot starts after `seq` again.
 */
function startingPoint(memory, firstSeq) {
  if (memory.seq && compareSequences(firstSeq, memory.seq) <= 0 && compareSequences(firstSeq, memory.prevSeq) > 0) {
    return [memory.prevSeq, memory.prevStates];
  }
  return [memory.seq, memory.states];
}

/** A device's state item; `episodes` (after seq, a Map) only with notifications on. */
function stateItem(device, seq, states, prevSeq, prevStates, episodes = null) {
  const item = { deviceId: { S: device }, sk: { S: STATE_SORT_KEY }, seq: { S: seq },
    statesV2: { S: statesText(states) }, prevSeq: { S: prevSeq }, prevStatesV2: { S: statesText(prevStates) } };
  if (episodes) item.episodes = { S: episodesText(episodes) };
  return item;
}

/** The episodes worth keeping (a Map): a series' newest anomaly at most its type's `episodeQuiet` before the newest
 * reading its state learned (an older one cannot hold a later reading in its episode). */
function openEpisodes(episodes, states, settings) {
  return new Map([...episodes].filter(([name, at]) => {
    const threshold = settings.thresholds.get(name);
    const state = states.get(name);
    return Boolean(threshold) && (!state || state.newestMs - at <= threshold.episodeQuietMs);
  }));
}

// ---------------------------------------------------------------- episodes and their notifications

/**
 * The anomalies of detector types that start an episode of their series: the first anomaly, or one more than the
 * type's `episodeQuiet` after the series' newest anomaly (reading time). Each anomaly of a record above its
 * device's `absorbed` sequence number updates `episodes` (a Map series -> newest anomaly ms).
 */
function episodeStarts(readings, settings, episodes, absorbed) {
  const starts = [];
  for (const reading of readings) {
    const threshold = settings.thresholds.get(reading.sensorType);
    if (!reading.anomaly || !threshold || !threshold.detector || !threshold.episodeQuietMs) continue;
    const device = reading.item.deviceId.S;
    const series = `${device}\u0000${reading.sensorType}`;
    const at = Number(reading.item.timestamp.N);
    const newest = episodes.get(series);
    if (newest === undefined || at - newest > threshold.episodeQuietMs) starts.push(reading);
    const seen = absorbed.get(device) || '';
    if (!seen || compareSequences(reading.record.sequenceNumber, seen) > 0) {
      episodes.set(series, newest === undefined ? at : Math.max(newest, at));
    }
  }
  return starts;
}

/** The SNS subject and message of an episode's first anomaly, for a person reading e-mail. */
function notification(reading, settings) {
  const { item } = reading;
  const field = (name, kind) => (item[name] && typeof item[name][kind] === 'string' ? item[name][kind] : '');
  const device = field('deviceId', 'S');
  const sensor = reading.sensorType;
  const unit = field('unit', 'S');
  const [low, high] = [field('expectedLow', 'N'), field('expectedHigh', 'N')];
  const quietS = settings.thresholds.get(sensor).episodeQuietMs / 1000;
  let subject = `[${settings.environment}] anomaly: ${device} ${sensor}`;
  if (subject.length > 100) subject = `${subject.slice(0, 97)}...`; // SNS: a subject is at most 100 characters
  const lines = [
    `Anomaly on device ${device}, sensor ${sensor} (${settings.environment}).`,
    '',
    `Rule:     ${field('rule', 'S')} (${field('reason', 'S')})`,
    `Value:    ${field('value', 'N')}${unit ? ` ${unit}` : ''}`,
    `Score:    ${field('score', 'N') || 'n/a'}`,
    low && high ? `Expected: ${low} to ${high}` : 'Expected: n/a',
    `Time:     ${new Date(Number(field('timestamp', 'N'))).toISOString()}`,
    '',
    `The first anomaly of this series after ${quietS} s without one; the rest of this episode is not notified.`,
    `iotpipe anomalies --device ${device} lists them all.`,
  ];
  return [subject, `${lines.join('\n')}\n`];
}

/** SNS Publish to the alarm topic, retrying retryable errors with backoff until `deadline`; rejects with the last
 * error. */
async function publish(runtime, subject, message, deadline) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await runtime.sns.send(new PublishCommand({
        TopicArn: runtime.settings.topicArn, Subject: subject, Message: message,
      }));
    } catch (err) {
      if (!retryable(err) || !(await backoff(runtime, attempt, deadline))) throw err;
    }
  }
}

/** The state items of `devices` (BatchGetItem, 100 keys a call, strongly consistent, unprocessed keys retried until
 * the deadline) as a Map device -> memory; null when they could not all be read. */
async function readMemories(runtime, devices, deadline) {
  const { table } = runtime.settings;
  const found = new Map();
  for (let start = 0; start < devices.length; start += BATCH_GET_LIMIT) {
    let pending = devices.slice(start, start + BATCH_GET_LIMIT)
      .map((d) => ({ deviceId: { S: d }, sk: { S: STATE_SORT_KEY } }));
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt += 1) {
      try {
        const response = await runtime.dynamodb.send(new BatchGetItemCommand({
          RequestItems: { [table]: { Keys: pending, ConsistentRead: true } },
        }));
        for (const item of (response.Responses || {})[table] || []) found.set(item.deviceId.S, memoryOf(item));
        pending = (((response.UnprocessedKeys || {})[table] || {}).Keys) || [];
      } catch (err) {
        log(runtime, 'ERROR', 'BatchGetItem failed', {
          error: errorCode(err), detail: errorDetail(err), keys: pending.length, attempt: attempt + 1,
        });
        if (!retryable(err)) return null;
      }
      if (pending.length === 0 || !(await backoff(runtime, attempt, deadline))) break;
    }
    if (pending.length) return null;
  }
  return found;
}

/** The devices with a detector reading whose state item this batch has not read yet -> their first record. */
function devicesToRecall(settings, readings, tally) {
  const detectors = detectorsOf(settings);
  const firsts = new Map();
  for (const reading of readings) {
    if (!detectors.has(reading.sensorType)) continue;
    const device = reading.item.deviceId.S;
    if (!tally.starts.has(device) && !firsts.has(device)) firsts.set(device, reading.record.sequenceNumber);
  }
  return firsts;
}

/** Read the state items of the window's devices not read yet in this batch (or take them from the `prefetched`
 * read, [devices (a Set), promise], when it holds them all) and set where each starts; false when they could not be
 * read (the window fails: nothing of it is written). */
async function recall(runtime, readings, deadline, tally, prefetched = null) {
  const firsts = devicesToRecall(runtime.settings, readings, tally);
  if (firsts.size === 0) return true;
  const devices = [...firsts.keys()];
  const memories = prefetched && devices.every((d) => prefetched[0].has(d))
    ? await prefetched[1] : await readMemories(runtime, devices, deadline);
  if (memories === null) return false;
  for (const [device, first] of firsts) {
    const memory = memories.get(device) || memoryOf(null);
    const [seq, states] = startingPoint(memory, first);
    tally.starts.set(device, [seq, states]);
    for (const [name, state] of states) tally.states.set(`${device}\u0000${name}`, state);
    if (runtime.settings.topicArn) {
      // A retry starts from the episodes after `seq` too: every anomaly it scores again was learned into them, so
      // it starts no episode again, and none of its records above `seq` is notified twice.
      for (const [name, at] of memory.episodes) tally.episodes.set(`${device}\u0000${name}`, at);
      tally.notified.set(device, memory.seq);
    }
  }
  return true;
}

/** The episode starts no earlier attempt notified: of records above the sequence number the device's stored item
 * had (an attempt notifies before it writes the item). */
function toNotify(starts, tally) {
  return starts.filter((r) => compareSequences(r.record.sequenceNumber, tally.notified.get(r.item.deviceId.S) || '') > 0);
}

/** Publish each episode start to the alarm topic (concurrently); one that cannot be published is logged with its
 * message and lost (readings and state never wait on the topic). */
async function notify(runtime, notices, deadline) {
  if (notices.length === 0) return;
  const messages = notices.map((reading) => notification(reading, runtime.settings));
  const results = await runUntil(runtime, messages.map(([subject, message]) => () => publish(runtime, subject,
    message, deadline)), runtime.poolSize, deadline);
  messages.forEach(([subject, message], i) => {
    const result = results[i];
    if (result && !('error' in result)) {
      log(runtime, 'INFO', 'anomaly episode notified', { subject });
    } else {
      const err = result ? result.error : new Error('SNS Publish not done before the deadline');
      log(runtime, 'ERROR', 'anomaly notification failed', {
        error: errorCode(err), detail: errorDetail(err), subject, notification: message,
      });
    }
  });
}

/** Keep the states as of the window's committed records: when the window was cut short, score its committed
 * readings again from the states before it (the same arithmetic, so the same states); `whole` is each device's
 * last committed record had the whole window committed. */
function commitStates(settings, committed, cutShort, before, absorbed, tally, whole) {
  if (!cutShort) {
    tally.committed = new Map(whole);
    return;
  }
  tally.states = new Map(before);
  scoreReadings(committed, settings, tally.states, absorbed);
  tally.committed = committedAfter(settings, committed, tally.committed);
}

/** Each device's last committed detector record (a Map) once `readings` commit too. */
function committedAfter(settings, readings, committed) {
  const detectors = detectorsOf(settings);
  const after = new Map(committed);
  for (const reading of readings) {
    if (!detectors.has(reading.sensorType)) continue;
    const device = reading.item.deviceId.S;
    const seq = reading.record.sequenceNumber;
    const last = after.get(device) || '';
    // the readings of one record share its sequence number: no order to ask then
    if (seq !== last && compareSequences(seq, last) > 0) after.set(device, seq);
  }
  return after;
}

/** The state item of every device in `committed` (a Map device -> last committed record), from `tally`. */
function stateItems(settings, tally, committed) {
  const bySeries = (map) => {
    const byDevice = new Map();
    for (const [series, value] of map) {
      const [device, name] = series.split('\u0000');
      if (!committed.has(device)) continue;
      if (!byDevice.has(device)) byDevice.set(device, new Map());
      byDevice.get(device).set(name, value);
    }
    return byDevice;
  };
  const [states, episodes] = [bySeries(tally.states), bySeries(tally.episodes)];
  return [...committed].map(([device, committedSeq]) => {
    const [startSeq, startStates] = tally.starts.get(device);
    const seq = compareSequences(committedSeq, startSeq) >= 0 ? committedSeq : startSeq;
    const deviceStates = states.get(device) || new Map();
    return stateItem(device, seq, deviceStates, startSeq, startStates, tally.notified.has(device)
      ? openEpisodes(episodes.get(device) || new Map(), deviceStates, settings) : null);
  });
}

/** Write the state item of every device with committed readings (BatchWriteItem, 25 a call); false when one could
 * not be written. */
async function saveStates(runtime, tally, deadline) {
  const items = stateItems(runtime.settings, tally, tally.committed);
  const chunks = [];
  for (let i = 0; i < items.length; i += BATCH_WRITE_LIMIT) chunks.push(items.slice(i, i + BATCH_WRITE_LIMIT));
  const results = await runUntil(runtime, chunks.map((chunk) => () => writeItems(runtime, chunk, deadline)),
    runtime.poolSize, deadline);
  return chunks.every((_, i) => results[i] && 'value' in results[i] && results[i].value.length === 0);
}

// ---------------------------------------------------------------- S3 objects

/** `year=/month=/day=/hour=/<shardId>/<firstSeq>-<lastSeq>.jsonl.gz` (UTC of `first`'s arrival). */
function batchSuffix(records, first = records[0]) {
  const iso = new Date(first.arrivedAt).toISOString();
  return `year=${iso.slice(0, 4)}/month=${iso.slice(5, 7)}/day=${iso.slice(8, 10)}/hour=${iso.slice(11, 13)}/`
    + `${records[0].shardId}/${records[0].sequenceNumber}-${records[records.length - 1].sequenceNumber}.jsonl.gz`;
}

function dataFields(record) {
  if (record.raw === null) return { data: record.data };
  const decoded = utf8Text(record.raw);
  return decoded === null ? { dataBase64: record.data } : { data: decoded };
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

/** One line per record with rejections, holding its payload once (see quarantine_line in the Python twin). */
function quarantineLine(interpretation) {
  const { record, rejections } = interpretation;
  const line = { sequenceNumber: record.sequenceNumber, partitionKey: record.partitionKey, reason: rejections[0].reason };
  if (rejections[0].sensorType !== null) line.sensorType = rejections[0].sensorType;
  if (!interpretation.recordRejected) {
    line.rejected = rejections.map((r) => ({ reason: r.reason, ...(r.sensorType ? { sensorType: r.sensorType } : {}) }));
  }
  return { ...line, ...dataFields(record) };
}

// ---------------------------------------------------------------- AWS calls with retries until the deadline

function isServiceError(err) {
  return Boolean(err) && typeof err.$fault === 'string';
}

function errorCode(err) {
  return String((err && (err.Code || err.name)) || 'Error');
}

function errorDetail(err) {
  return `${errorCode(err)}: ${err && err.message}`.slice(0, 500);
}

/** Transport errors (no AWS answer), throttling and 5xx are worth another attempt; any other answer is not. */
function retryable(err) {
  if (!isServiceError(err)) return true;
  const status = (err.$metadata && err.$metadata.httpStatusCode) || 0;
  return RETRYABLE_ERRORS.has(errorCode(err)) || err.$fault === 'server' || status >= 500;
}

/** Sleep before attempt `attempt + 1` (full jitter); false when there is no attempt or time left. */
async function backoff(runtime, attempt, deadline) {
  const delay = runtime.random() * Math.min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt);
  if (attempt + 1 >= MAX_WRITE_ATTEMPTS || runtime.monotonic() + delay > deadline) return false;
  await runtime.sleep(delay);
  return true;
}

/**
 * BatchWriteItem `items` (at most 25), retrying UnprocessedItems and retryable errors with backoff until
 * `deadline` (runtime.monotonic() seconds); resolves to the items that were still not written.
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
      log(runtime, 'ERROR', 'BatchWriteItem failed', {
        error: errorCode(err), detail: errorDetail(err), items: pending.length, attempt: attempt + 1,
      });
      if (!retryable(err)) return pending;
    }
    if (pending.length === 0 || !(await backoff(runtime, attempt, deadline))) break;
  }
  return pending;
}

/** PutObject, retrying retryable errors with backoff until `deadline`; rejects with the last error. */
async function putObject(runtime, key, body, deadline) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await runtime.s3.send(new PutObjectCommand({
        Bucket: runtime.settings.bucket, Key: key, Body: body, ContentType: 'application/gzip',
      }));
    } catch (err) {
      if (!retryable(err) || !(await backoff(runtime, attempt, deadline))) throw err;
    }
  }
}

/**
 * Run `tasks` (functions returning promises) at most `limit` at a time, waiting until `deadline` at most;
 * resolves to one entry per task: {value}, {error}, or undefined when it had not finished in time.
 */
async function runUntil(runtime, tasks, limit, deadline) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const index = next;
      next += 1;
      results[index] = await tasks[index]().then((value) => ({ value }), (error) => ({ error }));
    }
  };
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, Math.max(0, (deadline - runtime.monotonic()) * 1000));
  });
  await Promise.race([Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker)), timeout]);
  clearTimeout(timer);
  next = tasks.length; // nothing more is started once the deadline has passed
  return results.slice();
}

// ---------------------------------------------------------------- metrics and logs

/** JSON with DEL and non-ASCII escaped, as Python's json.dumps writes log lines. */
function asciiJson(value) {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function log(runtime, level, message, fields = {}) {
  runtime.emit(asciiJson({ level, message, ...fields }));
}

function compareCodePoints(a, b) {
  const left = [...a].map((c) => c.codePointAt(0));
  const right = [...b].map((c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(left.length, right.length); i += 1) {
    if (left[i] !== right[i]) return left[i] - right[i];
  }
  return left.length - right.length;
}

/**
 * At most MAX_SENSOR_TYPE_DIMENSIONS SensorType values (configured types first, then by name); the rest are
 * summed under `_other`, so one message cannot create thousands of billed custom metrics.
 * @param {Map<string, [number, number]>} byType
 * @param {Map<string, object>} configured
 */
function dimensionValues(byType, configured) {
  const ordered = [...byType.keys()].sort((a, b) => (Number(!configured.has(a)) - Number(!configured.has(b)))
    || compareCodePoints(a, b));
  const kept = new Map(ordered.slice(0, MAX_SENSOR_TYPE_DIMENSIONS).map((name) => [name, byType.get(name)]));
  const rest = ordered.slice(MAX_SENSOR_TYPE_DIMENSIONS).map((name) => byType.get(name));
  if (rest.length) kept.set(OTHER_SENSOR_TYPES, [rest.reduce((s, r) => s + r[0], 0), rest.reduce((s, r) => s + r[1], 0)]);
  return kept;
}

/**
 * CloudWatch Embedded Metric Format documents: one for `Environment`, one per SensorType value.
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
  const dimensions = dimensionValues(byType, settings.thresholds);
  for (const sensorType of [...dimensions.keys()].sort(compareCodePoints)) {
    const [stored, anomalies] = dimensions.get(sensorType);
    lines.push(documentOf(['Environment', 'SensorType'], [
      ['SensorReadingsProcessed', stored, 'Count'],
      ['AnomaliesDetected', anomalies, 'Count'],
    ], { SensorType: sensorType }));
  }
  return lines;
}

// ---------------------------------------------------------------- the batch

function groupBy(items, keyOf) {
  const groups = new Map();
  for (const item of items) {
    const key = keyOf(item);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(item);
  }
  return groups;
}

function remainingMs(context) {
  if (!context || typeof context.getRemainingTimeInMillis !== 'function') return DEFAULT_BUDGET_MS;
  const remaining = context.getRemainingTimeInMillis();
  return isNumber(remaining) ? Math.max(0, Math.trunc(remaining)) : DEFAULT_BUDGET_MS;
}

/**
 * Process one Kinesis batch; resolves to the partial-batch response (`batchItemFailures`).
 * Throws BatchFailed when the raw archive cannot be written or nothing of the batch could be stored.
 * @param {object} event the Lambda Kinesis event
 * @param {object|null} context the Lambda context (getRemainingTimeInMillis) or null
 * @param {object} runtime from createRuntime()
 */
async function processBatch(event, context, runtime) {
  const started = runtime.monotonic();
  const nowMs = runtime.clockMs();
  const budgetMs = remainingMs(context);
  const reserveMs = Math.min(RESERVE_MAX_MS, Math.max(RESERVE_MIN_MS, Math.floor(budgetMs / 10)));
  const deadline = started + Math.max(0, budgetMs - reserveMs) / 1000;
  const entries = isObject(event) ? own(event, 'Records') : undefined;
  const records = (Array.isArray(entries) ? entries : []).map((r) => decodeRecord(r, nowMs));
  if (records.length === 0) return { batchItemFailures: [] };

  const byShard = groupBy(records, (r) => r.shardId);
  const archiveTasks = [...byShard.values()].map((group) => () => putObject(
    runtime, `raw/${batchSuffix(group)}`, jsonlGzip(archiveLines(group)), deadline,
  ));
  const archived = runUntil(runtime, archiveTasks, runtime.poolSize, deadline);
  // The detector state items of the batch's devices (its partition keys: the rule's topic(2), which a valid reading's
  // deviceId equals) are read while the archive is written and the records validated: a read only, and no other
  // invocation writes them meanwhile (one invocation at a time per device).
  let prefetched = null;
  if ([...runtime.settings.thresholds.values()].some((t) => t.detector)) {
    const devices = [...new Set(records.map((r) => r.partitionKey))].filter((key) => DEVICE_ID_PATTERN.test(key));
    prefetched = [new Set(devices), readMemories(runtime, devices, deadline).catch(() => null)];
  }
  const tally = { stored: 0, anomalies: 0, quarantined: 0, duplicates: 0, timestampsReplaced: 0, byType: new Map(), failed: [],
    // The detector (docs/contract.md 12): each series' state after the committed records (and the window being
    // written), each device's starting point, and its last committed record.
    states: new Map(), starts: new Map(), committed: new Map(),
    // With notifications on: each series' newest anomaly, the sequence number each device's stored item had (what an
    // earlier attempt notified), the episode starts to notify.
    episodes: new Map(), notified: new Map(), notices: [],
    statesSaved: false }; // written with the last window's readings (no second round trip)
  let window = [];
  let readingsInWindow = 0;
  let archiveChecked = false;
  for (let position = 0; position < records.length; position += 1) {
    const interpretation = interpret(records[position], runtime.settings);
    window.push(interpretation);
    readingsInWindow += interpretation.readings.length;
    if (readingsInWindow < WINDOW_READINGS && position + 1 < records.length) continue;
    if (!archiveChecked) { // validation of the first window ran while the archive was in flight
      checkArchive(runtime, await archived, records.length);
      archiveChecked = true;
    }
    if (!(await storeWindow(runtime, window, records[0], deadline, tally, prefetched,
      position + 1 === records.length))) {
      tally.failed.push(...records.slice(position + 1).map((r) => r.sequenceNumber));
      break;
    }
    window = [];
    readingsInWindow = 0;
  }
  // An episode's notification goes out before the state item that records it (so a retry of a batch whose state was
  // written notifies nothing again).
  await notify(runtime, tally.notices, deadline);
  if (tally.committed.size && !tally.statesSaved && !(await saveStates(runtime, tally, deadline))) {
    // Items were written but a device's state was not: the whole batch is retried (a retry of the batch that
    // wrote the other states starts from their snapshots), and nothing of it counts as done.
    log(runtime, 'ERROR', 'detector state write failed; the batch will be retried', { records: records.length });
    Object.assign(tally, { stored: 0, anomalies: 0, quarantined: 0, duplicates: 0, timestampsReplaced: 0,
      byType: new Map(), failed: records.map((r) => r.sequenceNumber) });
  }
  summarize(runtime, records, byShard, tally, nowMs, started);
  if (tally.failed.length === records.length) {
    throw new BatchFailed(`no record of the batch could be stored (${records.length} records)`);
  }
  return { batchItemFailures: [...new Set(tally.failed)].sort(compareSequences).map((s) => ({ itemIdentifier: s })) };
}

/** Nothing is written before the raw archive exists: throw BatchFailed if it failed or was too slow. */
function checkArchive(runtime, results, recordCount) {
  for (const result of results) {
    if (result && !('error' in result)) continue;
    const err = result ? result.error : new Error('archive not written in time');
    log(runtime, 'ERROR', 'raw archive write failed; the batch will be retried', {
      error: errorCode(err), detail: errorDetail(err), records: recordCount,
    });
    throw new BatchFailed(`raw archive write to s3://${runtime.settings.bucket} failed: ${errorDetail(err)}`);
  }
}

/**
 * Write one window's readings and quarantine lines; count what it committed into `tally`. Resolves to false
 * when a record of it failed (the batch stops there: Lambda retries from the lowest failure). The batch's last
 * window writes the detector state items with its readings when it has no notification to send first.
 */
async function storeWindow(runtime, window, batchFirst, deadline, tally, prefetched = null, last = false) {
  if (runtime.monotonic() >= deadline) {
    tally.failed.push(...window.map((i) => i.record.sequenceNumber));
    return false;
  }
  const deduplicated = deduplicate(window.flatMap((i) => i.readings));
  const { repeats } = deduplicated;
  if (!(await recall(runtime, deduplicated.readings, deadline, tally, prefetched))) {
    tally.failed.push(...window.map((i) => i.record.sequenceNumber));
    return false;
  }
  const before = new Map(tally.states);
  const beforeEpisodes = new Map(tally.episodes);
  const absorbed = new Map([...tally.starts].map(([device, [seq]]) => [device, seq]));
  const readings = scoreReadings(deduplicated.readings, runtime.settings, tally.states, absorbed);
  let starts = runtime.settings.topicArn
    ? toNotify(episodeStarts(readings, runtime.settings, tally.episodes, absorbed), tally) : [];
  const items = windowItems(readings, runtime.settings);
  const chunks = [];
  for (let i = 0; i < items.length; i += BATCH_WRITE_LIMIT) chunks.push(items.slice(i, i + BATCH_WRITE_LIMIT));
  // The state items as they are when every record of the window commits, in chunks of their own, written with the
  // readings; when the window is cut short they are written again (saveStates) from what committed.
  const whole = committedAfter(runtime.settings, readings, tally.committed);
  const ahead = last && starts.length === 0 && tally.notices.length === 0 ? stateItems(runtime.settings, tally, whole) : [];
  const stateChunks = [];
  for (let i = 0; i < ahead.length; i += BATCH_WRITE_LIMIT) stateChunks.push(ahead.slice(i, i + BATCH_WRITE_LIMIT));
  const rejected = groupBy(window.filter((i) => i.rejections.length), (i) => i.record.shardId);
  const spans = groupBy(window.map((i) => i.record), (r) => r.shardId);
  const shards = [...rejected.keys()];
  const results = await runUntil(runtime, [
    ...chunks.map((chunk) => () => writeItems(runtime, chunk, deadline)),
    ...shards.map((shard) => () => putObject(runtime, `quarantine/${batchSuffix(spans.get(shard), batchFirst)}`,
      jsonlGzip(rejected.get(shard).map(quarantineLine)), deadline)),
    ...stateChunks.map((chunk) => () => writeItems(runtime, chunk, deadline)),
  ], runtime.poolSize, deadline);

  const failed = new Set();
  chunks.forEach((chunk, i) => {
    const result = results[i];
    const unwritten = result && 'value' in result ? result.value : chunk;
    for (const item of unwritten) failed.add(firstSequenceNumber(item));
  });
  shards.forEach((shard, i) => {
    const result = results[chunks.length + i];
    if (result && !('error' in result)) {
      for (const q of rejected.get(shard)) {
        const [first] = q.rejections;
        log(runtime, 'WARN', 'record quarantined', {
          reason: first.reason, shardId: q.record.shardId, sequenceNumber: q.record.sequenceNumber,
          partitionKey: q.record.partitionKey, readingsRejected: q.rejections.length,
          ...(first.sensorType ? { sensorType: first.sensorType } : {}),
        });
      }
    } else {
      const err = result ? result.error : new Error('quarantine not written in time');
      log(runtime, 'ERROR', 'quarantine write failed', { error: errorCode(err), detail: errorDetail(err) });
      for (const q of rejected.get(shard)) failed.add(q.record.sequenceNumber);
    }
  });

  let cut = window.findIndex((i) => failed.has(i.record.sequenceNumber));
  if (cut < 0) cut = window.length;
  const committed = new Set(window.slice(0, cut).map((i) => i.record));
  for (const reading of readings) {
    if (!committed.has(reading.record)) continue;
    const [count, anomalies] = tally.byType.get(reading.sensorType) || [0, 0];
    tally.byType.set(reading.sensorType, [count + 1, anomalies + (reading.anomaly ? 1 : 0)]);
    tally.stored += 1;
    tally.anomalies += reading.anomaly ? 1 : 0;
  }
  const cutShort = cut < window.length;
  commitStates(runtime.settings, cutShort ? readings.filter((r) => committed.has(r.record)) : readings, cutShort,
    before, absorbed, tally, whole);
  if (runtime.settings.topicArn) {
    if (cut < window.length) {
      tally.episodes = beforeEpisodes;
      starts = toNotify(episodeStarts(readings.filter((r) => committed.has(r.record)), runtime.settings,
        tally.episodes, absorbed), tally);
    }
    tally.notices.push(...starts);
  }
  const stateResults = results.slice(chunks.length + shards.length);
  tally.statesSaved = ahead.length > 0 && cut === window.length
    && stateResults.every((r) => r && 'value' in r && r.value.length === 0);
  tally.quarantined += window.slice(0, cut).filter((i) => i.rejections.length).length;
  tally.duplicates += repeats;
  tally.timestampsReplaced += window.filter((i) => i.timestampReplaced).length;
  // Lambda retries from the lowest failure on: the later records of the window are reported too, so no
  // record is counted as done before the attempt that commits it.
  tally.failed.push(...window.slice(cut).map((i) => i.record.sequenceNumber));
  return cut === window.length;
}

function summarize(runtime, records, byShard, tally, nowMs, started) {
  const totals = {
    records: records.length,
    stored: tally.stored,
    anomalies: tally.anomalies,
    quarantined: tally.quarantined,
    failed: tally.failed.length,
    duplicates: tally.duplicates,
    timestampsReplaced: tally.timestampsReplaced,
  };
  const lagMs = Math.max(0, nowMs - records.reduce((min, r) => Math.min(min, r.arrivedAt), Infinity));
  const durationMs = Math.round((runtime.monotonic() - started) * 1000);
  for (const line of emfLines(runtime.settings, nowMs, totals, lagMs, durationMs, tally.byType)) {
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
    // as numbers without BigInt (every reading compares its record's): the longer without leading zeros is the
    // larger, and digits of one length compare as their characters do
    const [x, y] = [a.replace(LEADING_ZEROS, ''), b.replace(LEADING_ZEROS, '')];
    if (x.length !== y.length) return x.length < y.length ? -1 : 1;
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  return compareCodePoints(a, b);
}
const LEADING_ZEROS = /^0+/;

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
  decodeRecord,
  parseJson,
  jsonDepth,
  resolveTimestamp,
  parseRfc3339,
  numberValue,
  formatNumber,
  anomalyReason,
  interpret,
  packItems,
  DETECTOR_DEFAULTS,
  DETECTOR_PRESETS,
  DEFAULT_SENSITIVITY,
  emptyDetectorState,
  detectorStateToList,
  detectorStateFromList,
  detectStep,
  detectSeries,
  detectorOf,
  judge,
  scoreReadings,
  episodeStarts,
  notification,
  statesText,
  storedNumber,
  parseStates,
  readStates,
  StatesMemo,
  KNOWN_STATES,
  compareSequences,
  startingPoint,
  STATE_SORT_KEY,
  retryable,
  BatchFailed,
  BACKOFF_CAP_S,
  MAX_WRITE_ATTEMPTS,
  MAX_JSON_DEPTH,
  POOL_SIZE,
};
