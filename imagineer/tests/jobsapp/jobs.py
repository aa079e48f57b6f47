import time

from imagineer.jobs import JobError, run_job

from .models import EchoJob


def run_echo(pk: int):
    def body(ctx):
        job = ctx.job
        for step in range(job.done_steps, job.steps):
            if job.fail_with:
                raise JobError(job.fail_with)
            time.sleep(job.sleep)
            ctx.update(progress=(step + 1) / job.steps, message=f"step {step + 1}", done_steps=step + 1)

    return run_job(EchoJob, pk, body)
