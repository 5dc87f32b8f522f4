export { default } from '../../../projections/account-balances.js';
