"""The CLI's commands, one module per command (or small group): each `run(args)` calls the library
function the facade (`scaledyolo.Detector`) calls too, then prints its result as text or `--json`.

Formatting the results for people lives here, not in the library: `format_*` functions per command.
"""
