from imagineer.jobs import reap_stale_jobs
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = (
        "End job rows whose worker died (no heartbeat for IMAGINEER_JOB_STALE_AFTER seconds): "
        "resumable jobs such as training are re-queued, others marked failed. Also stops jobs that "
        "ignore a cancel request and fails queued rows that Redis lost. Workers run this periodically."
    )

    def run(self, **options):
        counts = reap_stale_jobs()
        self.stdout.write(
            "reaped: {failed} failed, {requeued} re-queued, {force_cancelled} force-cancelled, {lost} lost".format(
                **counts
            )
        )
        return counts
