"""Links from a merge task to its Spark job in the AWS console (the task's "Extra Links")."""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

from dmscdc_provider.aws.remote_engine import parse_job_ref


class DmsCdcGlueJobRunLink(BaseAwsLink):
    """The Glue job run of a merge."""

    name = "Glue job run"
    key = "dmscdc_glue_job_run"
    format_str = BASE_AWS_CONSOLE_LINK + "/gluestudio/home?region={region_name}#/job/{job_name}/run/{run_id}"


class DmsCdcEmrServerlessJobRunLink(BaseAwsLink):
    """The EMR Serverless job run of a merge."""

    name = "EMR Serverless job run"
    key = "dmscdc_emr_serverless_job_run"
    format_str = (BASE_AWS_CONSOLE_LINK
                  + "/emr/home?region={region_name}#/serverless/applications/{application_id}/job-runs/{job_run_id}")


class DmsCdcEmrStepLink(BaseAwsLink):
    """The EMR step of a merge, on its cluster's page."""

    name = "EMR step"
    key = "dmscdc_emr_step"
    format_str = BASE_AWS_CONSOLE_LINK + "/emr/home?region={region_name}#/clusterDetails/{cluster_id}/steps/{step_id}"


JOB_LINKS = {"glue": DmsCdcGlueJobRunLink, "emr_serverless": DmsCdcEmrServerlessJobRunLink, "emr": DmsCdcEmrStepLink}


def persist_job_link(context, job_ref: str, hook) -> None:
    """Store the console link of the job ``job_ref`` names (no-op for an engine without one).

    :param hook: the operator's AWS hook (its connection's region and partition).
    """
    try:
        ref = parse_job_ref(job_ref)
    except ValueError:  # a RemoteMergeEngine's reference need not be JSON
        return
    link = JOB_LINKS.get(ref.get("engine")) if isinstance(ref, dict) else None
    if link is not None:
        ids = {key: value for key, value in ref.items() if key not in ("engine", "attempt_id", "plan_uri")}
        session = hook.get_session()  # the hook has no client of its own to ask
        region_name = hook.region_name or session.region_name
        if not region_name:  # no console page to name
            return
        # What ``BaseAwsLink.persist`` stores, without its ``do_xcom_push`` guard: the merge task
        # keeps that False (its outcome is pushed once, under ``outcome``), yet its links must show.
        context["ti"].xcom_push(key=link.key, value={
            "region_name": region_name,
            "aws_domain": link.get_aws_domain(session.get_partition_for_region(region_name)),
            **ids,
        })
