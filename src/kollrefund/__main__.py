from kollrefund.cli import main

main()
