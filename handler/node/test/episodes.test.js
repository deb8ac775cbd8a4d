'use strict';
// One SNS notification per anomaly episode of a series (docs/contract.md 12, "Episodes and notifications") in the
// Node twin against moto: the files of handler/vectors/episodes/, as tests/handler/test_episodes.py runs them.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { SNSClient, CreateTopicCommand } = require('@aws-sdk/client-sns');
const index = require('../index.js');
const support = require('./support.js');

const DIR = path.join(support.VECTORS_DIR, 'episodes');
const SCENARIOS = fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

let moto;
before(async () => { moto = await support.startMoto(); });
after(async () => { if (moto) await moto.stop(); });

/** An SNS client on moto recording the input of each Publish it sends. */
function recordingSns(endpoint, published) {
  const sns = new SNSClient({ endpoint, region: 'us-east-1', maxAttempts: 1,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
  sns.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'PublishCommand') published.push({ ...args.input });
    return next(args);
  }, { step: 'initialize', name: 'record' });
  return sns;
}

function expectedMessage(spec, items) {
  const item = items.find((i) => i.sk === spec.sk);
  return ['score', 'expectedLow', 'expectedHigh'].reduce(
    (message, name) => message.replace(`{${name}}`, index.formatNumber(item[name])), spec.message);
}

for (const file of SCENARIOS) {
  test(`${file}: one notification per episode and none on a retry`, async () => {
    const scenario = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
    await support.resetMoto(moto.endpoint);
    const aws = support.clients(moto.endpoint);
    await support.createResources(aws);
    const published = [];
    const sns = recordingSns(moto.endpoint, published);
    const { TopicArn: topic } = await sns.send(new CreateTopicCommand({ Name: 'iot-pipeline-alarms-test' }));
    for (const batch of scenario.batches) {
      published.length = 0;
      const { runtime } = support.makeRuntime({ ...scenario.env, ALARM_TOPIC_ARN: topic }, aws, { sns });
      assert.deepEqual(await index.processBatch(support.kinesisEvent(batch.records), null, runtime),
        { batchItemFailures: [] });
      const items = await support.scanItems(aws.dynamodb);
      assert.deepEqual(published, batch.notifications.map((spec) => ({
        TopicArn: topic, Subject: spec.subject, Message: expectedMessage(spec, items) })));
      const state = items.find((i) => i.sk === index.STATE_SORT_KEY);
      assert.deepEqual(JSON.parse(state.episodes), batch.episodes);
    }
  });
}

test('without a topic nothing is published and the state item has no episodes', async () => {
  const scenario = JSON.parse(fs.readFileSync(path.join(DIR, 'notifications.json'), 'utf8'));
  await support.resetMoto(moto.endpoint);
  const aws = support.clients(moto.endpoint);
  await support.createResources(aws);
  const { runtime } = support.makeRuntime(scenario.env, aws);
  assert.equal(runtime.settings.topicArn, '');
  await index.processBatch(support.kinesisEvent(scenario.batches[0].records), null, runtime);
  const state = (await support.scanItems(aws.dynamodb)).find((i) => i.sk === index.STATE_SORT_KEY);
  assert.equal(state.seq, '1039');
  assert.ok(!('episodes' in state) && !('prevEpisodes' in state));
});

test('a failed publish is logged with its message and the batch still commits', async () => {
  const scenario = JSON.parse(fs.readFileSync(path.join(DIR, 'notifications.json'), 'utf8'));
  await support.resetMoto(moto.endpoint);
  const aws = support.clients(moto.endpoint);
  await support.createResources(aws);
  const sns = recordingSns(moto.endpoint, []);
  const { runtime, lines } = support.makeRuntime(
    { ...scenario.env, ALARM_TOPIC_ARN: 'arn:aws:sns:us-east-1:123456789012:no-such-topic' }, aws, { sns });
  assert.deepEqual(await index.processBatch(support.kinesisEvent(scenario.batches[0].records), null, runtime),
    { batchItemFailures: [] });
  const failures = lines.map((l) => JSON.parse(l)).filter((d) => d.message === 'anomaly notification failed');
  assert.deepEqual(failures.map((f) => f.subject), ['[test] anomaly: press-1 temperature']);
  assert.match(failures[0].notification, /^Anomaly on device press-1, sensor temperature/);
  const state = (await support.scanItems(aws.dynamodb)).find((i) => i.sk === index.STATE_SORT_KEY);
  assert.equal(state.seq, '1039');
  assert.deepEqual(JSON.parse(state.episodes), { temperature: 1767225630000 });
});

test('an episodeQuiet outside the contract fails the start naming it', () => {
  for (const quiet of [-1, 1.5, 604_801, '60', true]) {
    const thresholds = { temperature: { min: 10, max: 80, unit: 'celsius', detector: 'onset', episodeQuiet: quiet } };
    assert.throws(() => index.settingsFromEnv({ DYNAMODB_TABLE: 't', S3_BUCKET: 'b', THRESHOLDS: JSON.stringify(thresholds) }),
      /episodeQuiet/);
  }
});
