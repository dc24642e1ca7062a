"""Which server tier this process is: "asgi" (daphne, the default) or "wsgi" (gunicorn's REST
workers; axisor.wsgi sets it). Views whose work belongs on one tier answer 421 on the other."""

TIER = "asgi"
