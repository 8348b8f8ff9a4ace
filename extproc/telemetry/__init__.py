"""Logs and metrics."""

# prometheus_client's multiprocess mode (service.workers > 1): the directory where every
# process writes its values. Named here, away from the metrics module, because it must be
# set before prometheus_client is imported: the value class is chosen at import.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
