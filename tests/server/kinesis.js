// A tiny Kinesis client for the demo, speaking the JSON API over plain HTTP
// to a local server (no signature checks there).
//   node kinesis.js ENDPOINT create-stream NAME SHARDS
//   node kinesis.js ENDPOINT read NAME        (prints shard, key and data per record)
'use strict';
const [endpoint, cmd, name, arg] = process.argv.slice(2);

async function call(action, body) {
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-amz-json-1.1',
      'X-Amz-Target': 'Kinesis_20131202.' + action,
      'Authorization': 'AWS4-HMAC-SHA256 Credential=demo/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0',
      'X-Amz-Date': '20200101T000000Z',
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(action + ' failed: ' + res.status + ' ' + text);
  return text ? JSON.parse(text) : {};
}

async function main() {
  if (cmd === 'create-stream') {
    await call('CreateStream', { StreamName: name, ShardCount: parseInt(arg || '1', 10) });
    for (;;) {
      const d = await call('DescribeStreamSummary', { StreamName: name });
      if (d.StreamDescriptionSummary.StreamStatus === 'ACTIVE') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log('stream ' + name + ' is ACTIVE');
  } else if (cmd === 'read') {
    const shards = (await call('ListShards', { StreamName: name })).Shards;
    for (const s of shards) {
      let it = (await call('GetShardIterator', { StreamName: name, ShardId: s.ShardId, ShardIteratorType: 'TRIM_HORIZON' })).ShardIterator;
      for (;;) {
        const page = await call('GetRecords', { ShardIterator: it, Limit: 10000 });
        if (page.Records.length === 0) break;
        for (const r of page.Records) {
          console.log(s.ShardId + '\t' + r.PartitionKey + '\t' + Buffer.from(r.Data, 'base64').toString('utf8'));
        }
        it = page.NextShardIterator;
      }
    }
  } else {
    throw new Error('usage: kinesis.js ENDPOINT create-stream NAME SHARDS | read NAME');
  }
}
main().catch((e) => { console.error(e.message); process.exit(1); });
