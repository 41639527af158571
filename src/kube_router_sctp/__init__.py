"""kube-router-sctp: build kube-router images whose IPVS service proxy forwards SCTP."""

__version__ = "0.1.0"
