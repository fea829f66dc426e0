"""The same container (or a venv, `runtime: none`) as Slurm batch jobs on an existing cluster.

`fab -H user@login-node slurm.<task>` (tasks.py). A job's options (job.py) are
validated, rendered into an sbatch script (batch_script.py) and sent with a
remote script (remote_scripts.py) over the login node's SSH connection
(login_node.py); Slurm's answers are read back by slurm_answers.py.
`slurm.jupyter` runs JupyterLab as such a job (jupyter_job.py, on the node)
and waits for it from the login node (jupyter_session.py).
"""
