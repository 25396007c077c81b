"""Operations endpoints: ``/health``, ``/ready``, ``/metrics``; request logging and Prometheus metrics."""
