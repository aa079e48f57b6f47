"""A concrete Job used only by the tests of the shared job plumbing."""

from django.db import models

from imagineer.models import Job


class EchoJob(Job):
    queue_name = "default"
    job_function = "imagineer.tests.jobsapp.jobs.run_echo"

    steps = models.PositiveIntegerField(default=3)
    sleep = models.FloatField(default=0.0)
    fail_with = models.CharField(max_length=100, blank=True)
    done_steps = models.PositiveIntegerField(default=0)
    resume = models.BooleanField(default=False)

    def can_resume(self) -> bool:
        return self.resume

    class Meta:
        app_label = "jobsapp"

