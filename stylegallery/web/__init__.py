"""The web app's own wing: what app.py needs to serve the library to strangers, kept out of its widget wiring.

The library never imports this package (tests/test_web_boundary.py checks it); only app.py and these modules do.

- `gate`: the only files a client may name (its uploads and the gallery's images), and the page's file widgets.
- `render`: pipeline events as the page's updates, region choices in the page's numbers, the page's text.
- `hosting`: upload caps, per-session pictures, Stop's record, settings from the environment, server set-up.
- `compat`: the one module that reaches into gradio's private structures; it fails loudly when they are gone.
"""
