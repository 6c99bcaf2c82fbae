"""Service: the always-on reconciler.

Owns the cycle that chains the stages (cycle, cycle_context, cycle_observe, cycle_act),
the service wiring and its jobs (app, app_jobs, app_status), configuration (config,
config_model), metrics, the HTTP surfaces (httpserver, dashboard, webhook), leader
election (leader), deliveries (delivery*, notify, forges, outbound) and logs (logs).
May import: views and every stage below it.
"""
