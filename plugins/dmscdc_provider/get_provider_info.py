"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from dmscdc_provider import __version__

INTEGRATION = "dmscdc"


def get_provider_info() -> dict:
    return {
        "package-name": "dmscdc",
        "name": "dmscdc",
        "description": "Keeps a Parquet data lake in sync with relational databases through AWS DMS.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.aws.amazon.com/dms/latest/userguide/CHAP_Target.S3.html",
                "tags": ["aws"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["dmscdc_provider.hooks.dmscdc"]}],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "dmscdc_provider.operators.plan",
                    "dmscdc_provider.operators.merge",
                    "dmscdc_provider.operators.catalog",
                    "dmscdc_provider.operators.summary",
                    "dmscdc_provider.operators.maintain",
                ],
            }
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["dmscdc_provider.sensors.raw_files"]}],
        "extra-links": [
            "dmscdc_provider.links.DmsCdcGlueJobRunLink",
            "dmscdc_provider.links.DmsCdcEmrServerlessJobRunLink",
            "dmscdc_provider.links.DmsCdcEmrStepLink",
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["dmscdc_provider.triggers.raw_files", "dmscdc_provider.triggers.merge_job"],
            }
        ],
    }
