"""Task administration: create a task, enrol nodes, render broker credentials, publish retained messages."""
