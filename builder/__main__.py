from builder.entry import main

main()
