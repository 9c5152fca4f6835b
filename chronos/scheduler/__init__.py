"""The cron scanner: fires due jobs to their runners, and decides missed runs and timeouts."""
