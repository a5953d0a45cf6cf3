from chatmq.cli import main

main()
