"""The agent desktop keeps its state in crm, policies and scripting."""
