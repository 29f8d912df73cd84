#!/usr/bin/env node
import "../dist/bundle/imgbackup.mjs";
