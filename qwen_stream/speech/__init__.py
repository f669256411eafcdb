"""The middle layer between the HTTP routes and the engine: requests become utterances in per-client queues
(speech), voices are resolved and stored (voices), and the server's life is run (startup). No HTTP here."""
