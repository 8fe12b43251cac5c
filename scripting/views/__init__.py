"""Pages of call scripting: the agent's panel (views.panel) and the supervisors'
designer, assignments and analytics (views.design)."""
