"""The two pieces of AWS Glue's ``awsglue`` library that ``dmscdc_spark/glue_entry.py`` uses,
for running that script on local Spark in the MWAA-in-a-box test (Glue is not installable)."""
