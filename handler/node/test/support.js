'use strict';
// Helpers shared by the Node processor tests: a moto server on a free loopback port, SDK clients on it,
// the contract's table and bucket, Kinesis events built from vector records, and read-back helpers.
const { spawn, execFileSync } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const fs = require('node:fs');
const zlib = require('node:zlib');
const { S3Client, CreateBucketCommand, ListObjectsV2Command, GetObjectCommand } = require('@aws-sdk/client-s3');
const { DynamoDBClient, CreateTableCommand, ScanCommand } = require('@aws-sdk/client-dynamodb');
const index = require('../index.js');

const REPO = path.resolve(__dirname, '..', '..', '..');
const VECTORS_DIR = path.join(REPO, 'handler', 'vectors');
const TABLE = 'SensorReadings-test';
const BUCKET = 'iot-raw-data-test';
const SHARD = 'shardId-000000000000';
const STREAM_ARN = 'arn:aws:kinesis:us-east-1:123456789012:stream/iot-sensor-data-stream-test';
const CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };

for (const [name, value] of Object.entries({
  AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1',
})) process.env[name] = value;
delete process.env.AWS_PROFILE;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// moto's server with iotpipe's parity and api patches, as the Python tests run it (tests/conftest.py). Plain moto
// loses writes when two requests race: two BatchWriteItem calls storing the first items of a new partition key each
// create its inner dict, and one call's items vanish; the parity patch `core.serialized_backends` runs each DynamoDB
// action alone. (A fault test here once found 52 of its 54 readings, which that race fits; it was not reproduced.)
const MOTO_SERVER = [
  'import sys',
  'from iotpipe.local.emulator import moto_compat',
  'moto_compat.apply(moto_compat.LIBRARY_KINDS)',
  'from moto.server import main',
  'main(sys.argv[1:])',
].join('\n');

/** Starts moto's server (with iotpipe's parity and api patches) on a free loopback port; resolves to
 *  { endpoint, stop() }. */
async function startMoto() {
  const port = await freePort();
  const child = spawn('python3', ['-c', MOTO_SERVER, '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-2000); });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`moto server exited: ${stderr}`);
    try {
      await fetch(`${endpoint}/moto-api/`);
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill();
        throw new Error(`moto server did not start on ${endpoint}: ${stderr}`);
      }
      await new Promise((resolve) => { setTimeout(resolve, 100); });
    }
  }
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', resolve);
    child.kill();
  });
  return { endpoint, stop };
}

/** Forget every resource of the moto server. */
async function resetMoto(endpoint) {
  const response = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
  if (!response.ok) throw new Error(`moto reset failed: ${response.status}`);
}

/** { s3, dynamodb } SDK clients pointed at `endpoint`. */
function clients(endpoint) {
  const config = { endpoint, region: 'us-east-1', credentials: CREDENTIALS, maxAttempts: 1 }; // as runtimeFromEnv
  return { s3: new S3Client({ ...config, forcePathStyle: true }), dynamodb: new DynamoDBClient(config) };
}

async function createTable(dynamodb, { withIndex = true } = {}) {
  const keys = withIndex ? ['deviceId', 'sk', 'anomalyDay', 'anomalySk'] : ['deviceId', 'sk'];
  await dynamodb.send(new CreateTableCommand({
    TableName: TABLE,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: keys.map((name) => ({ AttributeName: name, AttributeType: 'S' })),
    KeySchema: [{ AttributeName: 'deviceId', KeyType: 'HASH' }, { AttributeName: 'sk', KeyType: 'RANGE' }],
    ...(withIndex ? {
      GlobalSecondaryIndexes: [{
        IndexName: 'AnomaliesByDay',
        KeySchema: [{ AttributeName: 'anomalyDay', KeyType: 'HASH' }, { AttributeName: 'anomalySk', KeyType: 'RANGE' }],
        Projection: { ProjectionType: 'ALL' },
      }],
    } : {}),
  }));
}

/** The contract's readings table (with the sparse anomaly index) and the raw bucket. */
async function createResources({ s3, dynamodb }) {
  await createTable(dynamodb);
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
}

/** Lambda environment variables: `env` (values JSON-encoded unless strings) plus table and bucket. */
function settingsEnv(env) {
  const out = { DYNAMODB_TABLE: TABLE, S3_BUCKET: BUCKET };
  for (const [key, value] of Object.entries(env)) out[key] = typeof value === 'string' ? value : JSON.stringify(value);
  return out;
}

/** Base64 Kinesis data of a record spec: `data` (precomputed), `payload` (JSON), `text` or `base64`. */
function recordData(spec) {
  if ('data' in spec) return spec.data;
  if ('payload' in spec) return Buffer.from(JSON.stringify(spec.payload)).toString('base64');
  if ('text' in spec) return Buffer.from(spec.text).toString('base64');
  return String(spec.base64);
}

/** A Lambda Kinesis event from vector-style record specs (Maps, or plain objects). */
function kinesisEvent(records, shardId = SHARD) {
  return {
    Records: records.map((spec) => {
      const { sequenceNumber } = spec;
      return {
        kinesis: {
          kinesisSchemaVersion: '1.0',
          partitionKey: spec.partitionKey,
          sequenceNumber,
          data: recordData(spec),
          approximateArrivalTimestamp: spec.arrivedAt / 1000,
        },
        eventSource: 'aws:kinesis',
        eventVersion: '1.0',
        eventID: `${shardId}:${sequenceNumber}`,
        eventName: 'aws:kinesis:record',
        invokeIdentityArn: 'arn:aws:iam::123456789012:role/processor',
        awsRegion: 'us-east-1',
        eventSourceARN: STREAM_ARN,
      };
    }),
  };
}

/**
 * A vector file, each record with its Kinesis `data` as the Python runner makes it (json.dumps of `payload`):
 * both runners publish the same bytes.
 */
function loadVector(file) {
  const vector = JSON.parse(fs.readFileSync(file, 'utf8'));
  const script = 'import json, sys; sys.path.insert(0, sys.argv[2]); from processor_support import record_data; '
    + 'print(json.dumps([record_data(r) for r in json.load(open(sys.argv[1]))["records"]]))';
  const data = JSON.parse(execFileSync('python3', ['-c', script, file, path.join(REPO, 'tests', 'handler')],
    { encoding: 'utf8' }));
  vector.records = vector.records.map((record, i) => ({ ...record, data: data[i] }));
  return vector;
}

function vectorFiles() {
  return fs.readdirSync(VECTORS_DIR).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(VECTORS_DIR, f));
}

function attributeValue(value) {
  if ('S' in value) return value.S;
  if ('N' in value) return Number(value.N);
  if ('BOOL' in value) return value.BOOL;
  throw new Error(`unexpected attribute ${JSON.stringify(value)}`);
}

function compareCodePoints(a, b) {
  const [x, y] = [[...a].map((c) => c.codePointAt(0)), [...b].map((c) => c.codePointAt(0))];
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** Every item of the table as plain values, ordered by key like the Python runner. */
async function scanItems(dynamodb, { rawValues = false } = {}) {
  const items = [];
  let start;
  for (let page = 0; page < 1000; page += 1) {
    const response = await dynamodb.send(new ScanCommand({ TableName: TABLE, ExclusiveStartKey: start }));
    items.push(...response.Items);
    start = response.LastEvaluatedKey;
    if (!start) break;
  }
  const converted = rawValues ? items : items.map((item) => Object.fromEntries(
    Object.entries(item).map(([k, v]) => [k, attributeValue(v)]),
  ));
  const key = (item) => (rawValues ? [item.deviceId.S, item.sk.S] : [item.deviceId, item.sk]);
  return converted.sort((a, b) => compareCodePoints(key(a)[0], key(b)[0]) || compareCodePoints(key(a)[1], key(b)[1]));
}

/** { key: Buffer } of every object under `prefix`. */
async function objects(s3, prefix, bucket = BUCKET) {
  const listing = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  const out = {};
  for (const { Key } of listing.Contents || []) {
    const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key }));
    out[Key] = Buffer.from(await response.Body.transformToByteArray());
  }
  return out;
}

/** The JSON lines of a gzip object. */
function jsonlGz(body) {
  return zlib.gunzipSync(body).toString('utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

/** The EMF documents among stdout lines (every line must be JSON). */
function emfDocuments(lines) {
  return lines.map((line) => JSON.parse(line)).filter((doc) => '_aws' in doc);
}

/** Metric values of EMF documents: [dimension Environment, { SensorType: values }]. */
function metricTotals(documents) {
  const environment = {};
  const byType = {};
  for (const doc of documents) {
    for (const directive of doc._aws.CloudWatchMetrics) {
      for (const dimensions of directive.Dimensions) {
        const target = dimensions.includes('SensorType') ? (byType[doc.SensorType] ||= {}) : environment;
        for (const { Name } of directive.Metrics) target[Name] = (target[Name] || 0) + doc[Name];
      }
    }
  }
  return [environment, byType];
}

/** A runtime on `clients` with captured stdout lines and recorded (not slept) backoff. */
function makeRuntime(env, { s3, dynamodb }, overrides = {}) {
  const lines = [];
  const sleeps = [];
  const runtime = index.createRuntime({
    settings: index.settingsFromEnv(settingsEnv(env)),
    s3,
    dynamodb,
    emit: (line) => lines.push(line),
    sleep: async (seconds) => { sleeps.push(seconds); },
    ...overrides,
  });
  return { runtime, lines, sleeps };
}

module.exports = {
  REPO, VECTORS_DIR, TABLE, BUCKET, SHARD, startMoto, resetMoto, clients, createResources, createTable,
  settingsEnv, kinesisEvent, loadVector, vectorFiles, scanItems, objects, jsonlGz,
  emfDocuments, metricTotals, makeRuntime, compareCodePoints,
};
