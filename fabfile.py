"""Entry point that plain `fab` finds from the project root.

Workstation tasks (bootstrap and each of its steps) sit at the top level:
`fab -H user@host bootstrap`. Cluster tasks sit in the `slurm` namespace:
`fab -H user@login-node slurm.submit ...`.
"""

from bootstrap.tasks import collection as ns
from cluster.tasks import collection as slurm_collection

ns.add_collection(slurm_collection, name="slurm")
