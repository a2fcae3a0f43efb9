from crmd.cli import main

main()
