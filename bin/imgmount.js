#!/usr/bin/env node
import "../dist/bundle/imgmount.mjs";
