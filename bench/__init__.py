"""Bootstrap benchmark: Fabric (parallel) against Ansible on real test hosts."""
