"""memfit's local web page and JSON API (extra [web]: fastapi, uvicorn). `app.create_app()` builds it."""
