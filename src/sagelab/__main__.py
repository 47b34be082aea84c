from sagelab.cli import main

main()
