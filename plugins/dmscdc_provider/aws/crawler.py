"""The Glue crawler, as the blog catalogs its lake, with dmscdc's internal folders excluded.

In a DAG, create the crawler with the Amazon provider's ``GlueCrawlerCreateOperator`` from
``lake_crawler_config`` and run it with ``GlueCrawlerRunOperator(fail_on_already_running=False)``.
``run_crawler`` is the same for callers outside Airflow, plus one refinement: a crawl that
was already running may have started before this run's files were published, so it is
waited for and then a fresh crawl is started.
"""

from __future__ import annotations

import logging

from dmscdc_provider.aws.clients import error_code
from dmscdc_provider.aws.remote_engine import JOBS_FOLDER
from dmscdc_provider.plan import STAGING_FOLDER

log = logging.getLogger(__name__)

# Staged files of merges in progress and job documents must never become tables or columns.
LAKE_EXCLUSIONS = [f"{STAGING_FOLDER}/**", f"{JOBS_FOLDER}/**", "**/_*", "**/.*"]


def lake_crawler_config(
    name: str,
    role_arn: str,
    database: str,
    lake_root: str,
    tables: list[str] | None = None,
    table_prefix: str = "",
    schedule: str | None = None,
) -> dict:
    """A ``CreateCrawler`` request for the lake (``GlueCrawlerCreateOperator(config=...)``).

    :param lake_root: ``s3://bucket/prefix``; tables are at ``<lake_root>/<schema>/<table>/``.
    :param tables: ``schema.table`` names to crawl (one target each); None crawls the whole lake.
    :param table_prefix: prefix of the catalog table names the crawler creates.
    :param schedule: cron expression, or None when Airflow starts the crawler.
    """
    root = lake_root.rstrip("/")
    if tables:
        targets = [{"Path": f"{root}/{n.split('.', 1)[0]}/{n.split('.', 1)[1]}/", "Exclusions": LAKE_EXCLUSIONS}
                   for n in sorted(tables)]
    else:
        targets = [{"Path": f"{root}/", "Exclusions": LAKE_EXCLUSIONS}]
    config = {
        "Name": name,
        "Role": role_arn,
        "DatabaseName": database,
        "TablePrefix": table_prefix,
        "Targets": {"S3Targets": targets},
        # Columns only ever get added by dmscdc; update the catalog in place, never delete tables.
        "SchemaChangePolicy": {"UpdateBehavior": "UPDATE_IN_DATABASE", "DeleteBehavior": "LOG"},
        "RecrawlPolicy": {"RecrawlBehavior": "CRAWL_EVERYTHING"},
    }
    if schedule:
        config["Schedule"] = schedule
    return config


def run_crawler(
    crawler_name: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
    poll_interval: int = 15,
    wait: bool = True,
) -> str | None:
    """Start a crawl that sees every file published so far; returns the crawl's status when waiting.

    A crawler that is already running is waited for, then started again.
    """
    from airflow.providers.amazon.aws.hooks.glue_crawler import GlueCrawlerHook

    hook = GlueCrawlerHook(aws_conn_id=aws_conn_id, region_name=region_name)
    try:
        hook.start_crawler(crawler_name)
    except Exception as error:
        if error_code(error) != "CrawlerRunningException":
            raise
        log.info("crawler %s is already running; waiting for it, then crawling again", crawler_name)
        wait_for_crawler(hook, crawler_name, poll_interval)
        hook.start_crawler(crawler_name)
    if not wait:
        return None
    return wait_for_crawler(hook, crawler_name, poll_interval)


def wait_for_crawler(hook, crawler_name: str, poll_interval: int) -> str:
    """Wait with the provider's ``crawler_ready`` waiter; returns the last crawl's status.

    (``GlueCrawlerHook.wait_for_crawler_completion`` also fetches crawler metrics for its log,
    which needs one more permission, ``glue:GetCrawlerMetrics``, than catalog refreshes do.)
    """
    hook.get_waiter("crawler_ready").wait(Name=crawler_name, WaiterConfig={"Delay": poll_interval, "MaxAttempts": 1000})
    return hook.get_crawler(crawler_name)["LastCrawl"]["Status"]


def refresh_with_crawler(
    lake_root: str,
    tables: list[str],
    crawler_name: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
    poll_interval: int = 15,
) -> list[str]:
    """The ``glue_crawler`` catalog mode, as the blog refreshes its catalog: run the crawler
    (create it with ``lake_crawler_config``) and wait for it; returns the tables it covered.

    :raises RuntimeError: the crawl did not succeed.
    """
    status = run_crawler(crawler_name, aws_conn_id, region_name, poll_interval)
    if status in ("FAILED", "CANCELLED"):
        raise RuntimeError(f"crawler {crawler_name} ended {status}; see its CloudWatch log")
    return list(tables)
