from imagineer.maintenance import MaintenanceCommand
from training.runs.services import training_cleanup


class Command(MaintenanceCommand):
    help = (
        "Free space from training: in the artifacts storage keep the last IMAGINEER_KEEP_CHECKPOINTS checkpoints of "
        "each run that is not running, delete the files of failed runs older than "
        "IMAGINEER_FAILED_RUN_RETENTION_DAYS, stored run folders with no run and evaluation grid images with no grid; "
        "on this machine remove the scratch folders and temporary datasets a stopped worker left behind (run it on "
        "each worker machine too)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be removed.")

    def run(self, **options):
        counts = training_cleanup(dry_run=options["dry_run"])
        verb = "Would remove" if options["dry_run"] else "Removed"
        self.stdout.write(
            f"{verb} {counts['checkpoints_removed']} old checkpoint(s), the files of {counts['failed_runs_cleaned']} "
            f"expired failed run(s), {counts['orphan_run_dirs']} orphan run folder(s), "
            f"{counts['orphan_grid_dirs']} orphan evaluation grid folder(s) and "
            f"{counts['temp_datasets_removed']} temporary dataset(s): {counts['bytes_freed'] / 1e6:.1f} MB."
        )
        return counts
