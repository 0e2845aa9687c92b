"""De-aggregates Kinesis records with the independent aws-kinesis-agg
library, for kinetail's aggregation test.

Input on stdin: one JSON object per Kinesis record, {"key": ..., "data": base64}.
Output on stdout: one JSON object per user record, {"key": ..., "data": base64}.

With `--gunzip`, each Kinesis record is first decompressed with Python's gzip
module, as a consumer of a flow with `compression = "gzip"` does before it
de-aggregates.
"""
import base64
import gzip
import json
import sys

from aws_kinesis_agg.deaggregator import deaggregate_records


def main():
    gunzip = "--gunzip" in sys.argv[1:]
    records = []
    for n, line in enumerate(sys.stdin):
        r = json.loads(line)
        if gunzip:
            r["data"] = base64.b64encode(gzip.decompress(base64.b64decode(r["data"]))).decode("ascii")
        records.append({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": str(n),
                "approximateArrivalTimestamp": 0,
                "partitionKey": r["key"],
                "data": r["data"],
            }
        })
    for user in deaggregate_records(records):
        k = user["kinesis"]
        data = k["data"]
        if isinstance(data, bytes):
            data = data.decode("ascii")
        print(json.dumps({"key": k["partitionKey"], "data": data, "aggregated": bool(k.get("aggregated"))}))


if __name__ == "__main__":
    main()
