"""sls_beam: write logs from Apache Beam to Alibaba Cloud SLS via PutWebTracking."""

__version__ = "0.1.0"
