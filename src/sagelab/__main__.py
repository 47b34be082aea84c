from sagelab.cli import app

app()
