from dpo_recipes.cli import main

main()
