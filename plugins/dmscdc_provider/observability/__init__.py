"""What dmscdc tells a person on call: figures per merge (``figures``), the run history in the lake
(``history``), ``dmscdc status`` (``status``), Airflow metrics (``metrics``), OpenLineage facets
(``lineage``) and the freshness page (``web``). docs/observability.md describes each figure.

Modules here import nothing heavy at import time: ``dmscdc status`` and the DAG parser load them.
"""
