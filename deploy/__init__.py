"""The deployment: the BentoML service that composes the API (serving/), the /model endpoint and
the Gradio demo (ui/) mounted at /ui. The top floor: it imports serving and ui; neither imports it.

    bentoml serve deploy.service:SemiDAViLService --host 127.0.0.1 --port 3000
"""
