from medtune.cli import entry

entry()
