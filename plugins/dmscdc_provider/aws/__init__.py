"""dmscdc on AWS: S3 storage, the DynamoDB controller's helpers, the Glue catalog and crawler.

Every call goes through boto3 (directly, or through the Amazon provider's hooks when an
Airflow connection is given), so ``AWS_ENDPOINT_URL`` points all of it at an emulator.
Modules here import boto3 and the Amazon provider lazily: DAG parsing never pays for them.
"""
