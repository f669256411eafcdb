"""Long-form jobs (podcasts, audiobooks, bulk voice-overs): durable in SQLite, generated in the engine's spare
time, joined sample-exact, served as one file. docs/jobs.md."""
