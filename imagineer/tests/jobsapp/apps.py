from django.apps import AppConfig


class JobsAppConfig(AppConfig):
    name = "imagineer.tests.jobsapp"
    label = "jobsapp"
