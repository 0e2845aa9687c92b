"""What the tests ask of moto's side: `create STREAM BUCKET` makes a bucket
and a delivery stream that writes to it; `objects BUCKET` prints every
object of the bucket as a JSON line {"key": ..., "data": base64}, in the
order they were written."""

import base64
import json
import sys

import boto3

endpoint = sys.argv[1]
command = sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
s3 = boto3.client("s3", **kw)
if command == "create":
    stream, bucket = sys.argv[3], sys.argv[4]
    s3.create_bucket(Bucket=bucket)
    boto3.client("firehose", **kw).create_delivery_stream(
        DeliveryStreamName=stream,
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "RoleARN": "arn:aws:iam::123456789012:role/firehose-to-s3",
        },
    )
elif command == "objects":
    bucket = sys.argv[3]
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.extend(page.get("Contents", []))
    objects.sort(key=lambda o: (o["LastModified"], o["Key"]))
    for o in objects:
        data = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        print(json.dumps({"key": o["Key"], "data": base64.b64encode(data).decode()}))
else:
    sys.exit(f"unknown command {command!r}")
